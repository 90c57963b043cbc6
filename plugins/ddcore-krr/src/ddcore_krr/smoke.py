"""Test-scale options of ddcore-krr's components (the ``smoke`` configs of ddcore's plugin kit), dependency-free.

Plugins built on ddcore-krr (ddcore-pca, ddcore-rotations) reuse the tiny teacher in their own smoke configs.
"""

#: A Barlow Twins teacher small enough to train in about a second on 2 CPU cores, as recipe options
#: (``[synset.teacher]``). Cached in the session's $DDCORE_CACHE, so tests on the same tiny data train it once.
TINY_TEACHER_OPTIONS = {"base_width": 4, "epochs": 1, "batch_size": 8, "projector": [16, 16], "warmup_epochs": 0,
                        "amp": False, "train_limit": 16, "optimizer": "sgd"}

#: krr_pixels at test scale.
TINY_KRR_PIXELS = {"num": 6, "teacher": TINY_TEACHER_OPTIONS, "kmeans_iterations": 2}
