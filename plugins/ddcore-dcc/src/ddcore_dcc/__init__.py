"""ddcore-dcc: the gradient-matching family (DC, DSA, DCC, DSAC) as ddcore components.

Registers

* sampler ``inner_loop``: a fresh network every outer iteration, ``K_i`` synthetic updates per network and ``T``
  epochs of network training on the synthetic set between them (DC ``main.py`` / DCC ``main.py``);
* objective ``gradient_match``: class-wise (DC/DSA) or class-collective (DCC/DSAC) gradient matching with the
  layer-wise ``'ours'`` distance (or ``'mse'``/``'cos'``) and DCC's bi-level warm-up.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
