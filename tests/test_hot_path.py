"""Hot-path defaults of the step: chunked real forward passes and channels_last on a CPU keep the step's values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddcore.context import batch_independent
from ddcore.engine import Run
from ddcore.errors import RecipeError
from ddcore.hotpath import HotPath, can_compile
from ddcore.models.convnet import ConvNet
from ddcore.recipe import parse_recipe
from ddcore.testing import make_step_context, run_recipe, tiny_recipe
from ddcore.types import RealBatch, SynBatch


def convnet(norm: str) -> ConvNet:
    torch.manual_seed(0)
    return ConvNet(channels=3, height=16, width=16, num_classes=4, net_width=8, net_depth=2, norm=norm)


class CountingNet(nn.Module):
    """Wraps a backbone and records the batch size of every forward pass."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.sizes: list[int] = []

    def forward_all(self, x):
        self.sizes.append(int(x.shape[0]))
        return self.net.forward_all(x)


def context(net, real_chunk: int, n: int = 10):
    g = torch.Generator().manual_seed(1)
    real = RealBatch(torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % 4, torch.arange(n))
    syn = SynBatch(torch.randn(4, 3, 16, 16, generator=g).requires_grad_(), torch.arange(4))
    return make_step_context(None, real, syn, [net], real_chunk=real_chunk)


def test_batch_independence_of_norm_layers():
    assert batch_independent(convnet("instancenorm"))
    assert batch_independent(convnet("none"))
    bn = convnet("batchnorm")
    assert not batch_independent(bn)  # train mode: batch statistics
    assert batch_independent(bn.eval())  # running statistics
    bn.train()
    bn.batch_independent = True  # a backbone may declare it
    assert batch_independent(bn)


def test_chunked_real_forward_equals_one_pass():
    net = CountingNet(convnet("instancenorm"))
    whole = context(net, real_chunk=0).outputs(net, "real")
    assert net.sizes == [10]
    chunked_ctx = context(net, real_chunk=4)
    chunked = chunked_ctx.outputs(net, "real")
    assert net.sizes == [10, 4, 4, 2]
    for name in ("embedding", "feature_map", "logits"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name), rtol=1e-5, atol=1e-5)
    assert not chunked.embedding.requires_grad  # real targets stay constants
    assert chunked_ctx.outputs(net, "real") is chunked  # memoised: no second pass
    assert net.sizes == [10, 4, 4, 2]
    chunked_ctx.outputs(net, "syn")  # the synthetic side is never chunked (it is differentiated)
    assert net.sizes[-1] == 4


def test_batch_statistics_nets_are_never_chunked():
    net = CountingNet(convnet("batchnorm"))
    context(net, real_chunk=3).outputs(net, "real")
    assert net.sizes == [10]  # chunks would change the batch statistics


def test_cpu_defaults_and_overrides():
    def run(**opts):
        r = tiny_recipe(run={"iterations": 1, "progress": False, **opts})
        return Run(parse_recipe(r), device="cpu", progress=False, log=lambda *_: None)

    # before build(): precision "auto" is bf16 on a CPU until the objectives are checked (tests/test_precision.py)
    default = run()
    cpu_compiles = can_compile(torch.device("cpu"))
    assert default.hot_path == HotPath(channels_last=True, real_chunk=256, compile=cpu_compiles,
                                      compile_first_order=cpu_compiles, strict=False, precision="bf16")
    forced = run(real_chunk=0, channels_last="off", compile="auto", precision="fp32")
    assert forced.hot_path == HotPath(channels_last=False, real_chunk=0, compile=cpu_compiles,
                                     compile_first_order=cpu_compiles, strict=False)
    assert run(real_chunk=64).hot_path.real_chunk == 64
    with pytest.raises(RecipeError, match="real_chunk"):
        parse_recipe(tiny_recipe(run={"real_chunk": -2}))
    with pytest.raises(RecipeError, match="channels_last"):
        parse_recipe(tiny_recipe(run={"channels_last": True}))
    with pytest.raises(RecipeError, match=r"run\.compile.*'auto', 'on', 'off'"):
        parse_recipe(tiny_recipe(run={"compile": "yes"}))


def test_auto_switches_per_device():
    """'auto' / -1 are decided by the device: the CPU measurements do not carry over to other devices."""
    cfg = parse_recipe(tiny_recipe(run={"compile": "auto"})).run
    cpu_compiles = can_compile(torch.device("cpu"))
    assert HotPath.resolve(cfg, torch.device("cpu")) == HotPath(True, 256, cpu_compiles, cpu_compiles, strict=False,
                                                                precision="bf16")
    assert HotPath.resolve(cfg, torch.device("cuda")) == HotPath(False, 0, False, strict=False)
    forced = parse_recipe(tiny_recipe(run={"compile": "on", "channels_last": "on", "real_chunk": 32})).run
    assert HotPath.resolve(forced, torch.device("cuda")) == HotPath(True, 32, True, True, strict=True)


def test_chunked_step_matches_whole_batch_step(tmp_path, monkeypatch):
    """The whole engine step: real batches of 320 in chunks of 64 move the synthetic set as one pass does."""
    def recipe(chunk, iterations=3):
        r = tiny_recipe(run={"iterations": iterations, "log_every": 1, "checkpoint_every": 0, "progress": False,
                             "real_chunk": chunk, "channels_last": "off", "compile": "off"})
        r.pop("eval")
        return r

    whole = run_recipe(recipe(0), tmp_path, out_name="whole")
    sizes: list[int] = []
    forward_all = ConvNet.forward_all

    def spy(self, x):
        sizes.append(int(x.shape[0]))
        return forward_all(self, x)

    monkeypatch.setattr(ConvNet, "forward_all", spy)
    chunked = run_recipe(recipe(64), tmp_path, out_name="chunked")
    monkeypatch.undo()
    assert max(sizes) == 64 and sizes.count(64) == 3 * 5  # 320 real images per step, 3 steps
    init = run_recipe(recipe(0, iterations=0), tmp_path, out_name="init")
    assert (whole.synset.images - init.synset.images).abs().max() > 1e-3  # the set did move
    torch.testing.assert_close(chunked.synset.images, whole.synset.images, rtol=1e-4, atol=1e-4)
