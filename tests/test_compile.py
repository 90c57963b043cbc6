"""``[run] compile``: compiled step networks compute what eager ones do, share their code across fresh networks of
one architecture, and are refused where the objective needs double backward."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from ddcore import hookimpl
from ddcore.components import BackboneOutput, Objective
from ddcore.engine import Run
from ddcore.errors import RecipeError
from ddcore.hotpath import HotPath, can_compile, compile_backbone, is_compiled
from ddcore.models.convnet import ConvNet
from ddcore.plugins import PluginHost
from ddcore.recipe import parse_recipe
from ddcore.testing import run_recipe, tiny_recipe


def convnet(seed: int) -> ConvNet:
    torch.manual_seed(seed)
    return ConvNet(channels=3, height=16, width=16, num_classes=4, net_width=8, net_depth=2)


def test_compiled_backbone_matches_eager_forward_and_backward():
    eager, compiled = convnet(0), compile_backbone(convnet(0))
    assert is_compiled(compiled) and not is_compiled(eager)
    assert compile_backbone(compiled) is compiled  # idempotent
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out_e, out_c = eager.forward_all(x), compiled.forward_all(x)
    assert isinstance(out_c, BackboneOutput)
    for name in ("embedding", "feature_map", "logits"):
        torch.testing.assert_close(getattr(out_c, name), getattr(out_e, name), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-5)  # forward() goes through it too
    for out in (out_e, out_c):
        (out.logits.square().mean() + out.embedding.mean()).backward()
    for (name, p_e), p_c in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(p_c.grad, p_e.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints do not see the compilation


def test_fresh_networks_reuse_the_compiled_code_with_their_own_weights():
    """DM draws a new network every step: it must not recompile, and must not run the first net's weights."""
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        compile_backbone(convnet(10)).forward_all(x)
        graphs = counters["stats"]["unique_graphs"]
        for seed in (11, 12):
            net = compile_backbone(convnet(seed))
            torch.testing.assert_close(net.forward_all(x).logits, convnet(seed).forward_all(x).logits,
                                       rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == graphs


def _recipe(compile_: str, iterations: int = 3) -> dict:
    r = tiny_recipe(run={"iterations": iterations, "log_every": 1, "checkpoint_every": 0, "progress": False,
                         "compile": compile_})
    r.pop("eval")
    # means only: the 2nd-moment term's sqrt of a variance of 2 images amplifies kernel rounding without bound
    r["objective"] = [{"name": "moment_matching", "moments": 1}]
    return r


def test_compiled_step_matches_eager_step_and_is_reproducible(tmp_path):
    eager = run_recipe(_recipe("off"), tmp_path, out_name="eager")
    compiled = run_recipe(_recipe("on"), tmp_path, out_name="compiled")
    again = run_recipe(_recipe("on"), tmp_path, out_name="again")
    init = run_recipe(_recipe("off", iterations=0), tmp_path, out_name="init")
    assert compiled.run.hot_path.compile and not eager.run.hot_path.compile
    assert (eager.synset.images - init.synset.images).abs().max() > 1e-3  # the set did move
    torch.testing.assert_close(compiled.synset.images, eager.synset.images, rtol=1e-4, atol=1e-4)
    assert torch.equal(again.synset.images, compiled.synset.images)  # same seed, same device


class _SecondOrder(Objective):
    double_backward = True

    def __call__(self, ctx):  # pragma: no cover - never stepped
        raise AssertionError


class _SecondOrderPlugin:
    @hookimpl
    def ddcore_register_objectives(self, registry):
        registry.add("second_order", _SecondOrder)


def _second_order_run(compile_: str) -> Run:
    r = _recipe(compile_)
    r["objective"] = [{"name": "second_order"}]
    host = PluginHost(extra=[_SecondOrderPlugin()])
    return Run(parse_recipe(r), host=host, device="cpu", progress=False, log=lambda *_: None)


def test_double_backward_objectives_refuse_on_and_stay_eager_on_auto():
    """... except for their first-order passes (``HotPath.first_order``), which keep the compiled code."""
    with pytest.raises(RecipeError, match=r"run\.compile: 'on' cannot run objective 'second_order'.*double backward"):
        _second_order_run("on").build()
    run = _second_order_run("auto").build()
    cpu_compiles = can_compile(torch.device("cpu"))
    assert run.hot_path == HotPath(channels_last=True, real_chunk=256, compile=False,
                                   compile_first_order=cpu_compiles, strict=False)
    assert run.build_ctx.hot_path is run.hot_path
    assert _second_order_run("off").build().hot_path.compile_first_order is False


def test_first_order_forward_is_compiled_and_gives_eager_gradients():
    eager, net = convnet(3), convnet(3)
    assert HotPath(compile_first_order=False).first_order(net) is net
    forward = HotPath(compile_first_order=True, scope="test-first-order").first_order(net)
    assert forward is not net and not is_compiled(net)  # the network itself stays eager (double backward)
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    graphs = counters["stats"]["unique_graphs"]
    g_c = torch.autograd.grad(torch.nn.functional.cross_entropy(forward(x), y), list(net.parameters()))
    assert counters["stats"]["unique_graphs"] > graphs  # it ran compiled code
    g_e = torch.autograd.grad(torch.nn.functional.cross_entropy(eager(x), y), list(eager.parameters()))
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_scopes_have_their_own_compiled_code():
    """The step and the evaluation compile the same class into separate caches (separate recompile budgets)."""
    step, ev = compile_backbone(convnet(0)), compile_backbone(convnet(0), scope="eval")
    f_step, f_eval = step.forward_all.__func__, ev.forward_all.__func__
    assert f_step is not f_eval
    assert f_step is compile_backbone(convnet(1)).forward_all.__func__  # one per (class, scope)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ev.forward_all(x).logits, step.forward_all(x).logits, rtol=1e-5, atol=1e-5)


class _Flaky(ConvNet):
    """A ConvNet class of its own (own compiled-code cache) whose compiled code is made to fail."""


def test_auto_falls_back_to_eager_when_compiled_code_fails_and_on_raises(monkeypatch):
    import ddcore.hotpath as hotpath

    def broken(self, x):
        raise RuntimeError("inductor: no C++ headers\nmore detail")

    for name in ("_FELL_BACK", "_TOLERANT"):  # isolated, and restored afterwards
        monkeypatch.setattr(hotpath, name, type(getattr(hotpath, name))())
    for scope in ("flaky-auto", "flaky-on"):
        monkeypatch.setitem(hotpath._COMPILED, (_Flaky, scope), broken)
    torch.manual_seed(0)
    x = torch.randn(3, 3, 16, 16)
    ref = ConvNet(channels=3, height=16, width=16, num_classes=4, net_width=8, net_depth=2)

    def flaky():
        net = _Flaky(channels=3, height=16, width=16, num_classes=4, net_width=8, net_depth=2)
        net.load_state_dict(ref.state_dict())
        return net

    tolerant = HotPath(compile=True, strict=False, scope="flaky-auto").prepare_net(flaky())
    # an error of the network itself is not swallowed: the eager retry raises it again, and compile stays on
    with pytest.raises(RuntimeError, match="channels"):
        tolerant.forward_all(torch.randn(2, 5, 16, 16))
    assert (_Flaky, "flaky-auto") not in hotpath._FELL_BACK
    with pytest.warns(RuntimeWarning, match=r"torch.compile of _Flaky.forward_all failed \(RuntimeError: inductor: "
                                            r"no C\+\+ headers\); running it eagerly"):
        out = tolerant.forward_all(x)
    torch.testing.assert_close(out.logits, ref.forward_all(x).logits)
    assert (_Flaky, "flaky-auto") in hotpath._FELL_BACK
    again = HotPath(compile=True, strict=False, scope="flaky-auto").prepare_net(flaky())
    torch.testing.assert_close(again(x), ref(x))  # later nets go straight to eager (no second warning needed)

    strict = HotPath(compile=True, strict=True, scope="flaky-on").prepare_net(flaky())
    with pytest.raises(RuntimeError, match="no C\\+\\+ headers"):
        strict.forward_all(x)
    assert (_Flaky, "flaky-on") not in hotpath._FELL_BACK
