"""DC's evaluation-time augmentation (crop / scale / rotate / noise, one per image) and its evaluator option."""

from __future__ import annotations

import pytest
import torch

import ddcore.augment.dc as dc
from ddcore.cli import main
from ddcore.testing import run_recipe, tiny_recipe


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_parse_strategy():
    assert dc.parse_strategy("crop_scale_rotate") == ("crop", "scale", "rotate")
    for bad in ("", "crop_flip", "blur"):
        with pytest.raises(ValueError, match="crop, scale, rotate, noise"):
            dc.parse_strategy(bad)


def test_crop_is_an_integer_shift_with_a_mean_border():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    out = dc._crop(x, 2, gen())
    mean = x.mean()
    for i in range(2):
        # every output pixel is an input pixel of the same image or the border value
        values = set(out[i].flatten().tolist())
        assert values <= set(x[i].flatten().tolist()) | {mean.item()}
        # a shift: some 4x4 window of the output equals a window of the input
        found = any(torch.equal(out[i, :, r:r + 4, c:c + 4], x[i, :, r2:r2 + 4, c2:c2 + 4])
                    for r in range(3) for c in range(3) for r2 in range(3) for c2 in range(3))
        assert found


def test_scale_zero_is_identity_and_shapes_hold():
    x = torch.randn(5, 3, 8, 8)
    assert torch.equal(dc._scale(x, 0.0, gen()), x)
    out = dc._scale(x, 0.5, gen())
    assert out.shape == x.shape and not torch.equal(out, x)


def test_rotate_keeps_a_constant_image_and_moves_others():
    flat = torch.full((3, 1, 8, 8), 0.7)
    assert torch.allclose(dc._rotate(flat, 45, gen()), flat, atol=1e-6)
    x = torch.randn(8, 1, 16, 16)
    assert not torch.allclose(dc._rotate(x, 45, gen(1)), x)


def test_one_operation_per_image_and_determinism():
    x = torch.randn(64, 1, 12, 12)
    a = dc.dc_augment(x, "crop_scale_rotate_noise", generator=gen(3))
    b = dc.dc_augment(x, "crop_scale_rotate_noise", generator=gen(3))
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.equal(a, dc.dc_augment(x, "crop_scale_rotate_noise", generator=gen(4)))
    noise = dc.dc_augment(x, "noise", noise=0.001, generator=gen())
    assert 0 < (noise - x).abs().max() < 0.01


def test_evaluator_option_is_validated_and_named(tmp_path, capsys):
    import tomli_w

    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(tiny_recipe(eval={**tiny_recipe()["eval"], "augment_strategy": "crop_flip"})))
    assert main(["recipe", "check", str(path)]) == 2
    assert "eval.augment_strategy: expected '_'-joined operations" in capsys.readouterr().err


def test_evaluator_trains_with_the_dc_strategy(tmp_path, monkeypatch):
    """The option is not a no-op: every training batch goes through dc_augment with the strategy."""
    calls = []
    real = dc.dc_augment

    def spy(x, strategy="crop_scale_rotate", **kw):
        calls.append(strategy)
        return real(x, strategy, **kw)

    monkeypatch.setattr(dc, "dc_augment", spy)
    recipe = tiny_recipe(eval={**tiny_recipe()["eval"], "augment_strategy": "crop_scale_rotate", "baselines": []})
    run_recipe(recipe, tmp_path)
    assert calls and set(calls) == {"crop_scale_rotate"}
    calls.clear()
    run_recipe(tiny_recipe(eval={**tiny_recipe()["eval"], "baselines": []}), tmp_path, out_name="dsa")
    assert calls == []
