"""Teacher: Barlow Twins training is cached by settings + data; user files load with documented keys."""

from __future__ import annotations

import attrs
import pytest
import torch
from safetensors.torch import save_file

from ddcore.errors import UserError
from ddcore.testing import make_build_context, tiny_dataset

from ddcore_krr.barlow import barlow_twins_loss
from ddcore_krr.networks import CifarResNet18
from ddcore_krr.teacher import build_teacher, load_teacher_file

from ddcore_krr.testing import TINY_TEACHER


def _build(cache_dir, seed=0, data_seed=0):
    return make_build_context(data=tiny_dataset(num_classes=3, per_class=6, shape=(3, 8, 8), seed=data_seed),
                              cache_dir=cache_dir, seed=seed)


def _weights(teacher):
    return {k: v.detach().clone() for k, v in teacher.net.state_dict().items()}


def test_same_key_returns_identical_weights_from_cache(tmp_path):
    first = build_teacher(TINY_TEACHER, _build(tmp_path))
    assert first.source == "trained"
    # a different run seed does not change the key: the teacher is shared across runs
    second = build_teacher(TINY_TEACHER, _build(tmp_path, seed=7))
    assert second.source == "cache" and second.key == first.key
    w1, w2 = _weights(first), _weights(second)
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(first.features(x), second.features(x))


def test_training_is_deterministic_and_key_depends_on_settings_and_data(tmp_path):
    a = build_teacher(TINY_TEACHER, _build(tmp_path / "a"))
    b = build_teacher(TINY_TEACHER, _build(tmp_path / "b"))  # retrained from scratch in another cache
    assert b.source == "trained" and a.key == b.key
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    other_setting = build_teacher(attrs.evolve(TINY_TEACHER, lr=0.1), _build(tmp_path / "a"))
    other_data = build_teacher(TINY_TEACHER, _build(tmp_path / "a", data_seed=1))
    assert len({a.key, other_setting.key, other_data.key}) == 3
    assert other_setting.source == other_data.source == "trained"


def test_user_file_loads_torchvision_keys_with_prefix(tmp_path):
    net = CifarResNet18(base_width=4)
    state = {f"backbone.{k}": v for k, v in net.state_dict().items() if "num_batches" not in k}
    state["fc.weight"] = torch.zeros(2, 32)  # a classifier is ignored
    path = tmp_path / "teacher.safetensors"
    save_file(state, str(path))
    loaded = load_teacher_file(path)
    assert loaded.out_dim == 32
    for k, v in net.state_dict().items():
        if "num_batches" not in k:
            assert torch.equal(loaded.state_dict()[k], v)
    pt = tmp_path / "teacher.pt"
    torch.save({"state_dict": net.state_dict()}, pt)
    assert load_teacher_file(pt).out_dim == 32
    teacher = build_teacher(attrs.evolve(TINY_TEACHER, path=str(path)), _build(tmp_path))
    assert teacher.source == "file" and teacher.dim == 32


def test_bad_user_file_is_a_one_line_user_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"conv1.weight": torch.zeros(4, 3, 3, 3)}, str(path))
    with pytest.raises(UserError, match="missing"):
        load_teacher_file(path)
    with pytest.raises(UserError, match="not found"):
        load_teacher_file(tmp_path / "nope.pt")


def test_barlow_loss_is_zero_for_identical_decorrelated_views():
    x = torch.randn(64, 8)
    z = torch.linalg.qr(x - x.mean(0))[0]  # zero-mean orthonormal columns: identity cross-correlation
    assert float(barlow_twins_loss(z, z, lambd=0.0051)) < 1e-2
    assert float(barlow_twins_loss(z, torch.randn(64, 8))) > 0.1


def _official_trunk(width: int = 64):
    """The official KRR-ST teacher as train.py builds it: torchvision resnet18, fc = Identity, 3x3 stem with
    padding 2, no max-pool (its state dict is what barlow_twins_resnet18_<data>.pt holds)."""
    import torchvision

    net = torchvision.models.resnet18()
    net.fc = torch.nn.Identity()
    net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    net.maxpool = torch.nn.Identity()
    return net


def test_official_layout_file_gives_the_official_features(tmp_path):
    torch.manual_seed(0)
    official = _official_trunk()
    with torch.no_grad():  # non-trivial BN statistics, so a wrongly mapped buffer shows in the features
        for m in official.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    path = tmp_path / "barlow_twins_resnet18_cifar100.pt"
    torch.save(official.state_dict(), path)  # exactly train.py's load_state_dict input (num_batches_tracked too)
    loaded = load_teacher_file(path)
    x = torch.randn(3, 3, 32, 32)
    official.eval()
    torch.testing.assert_close(loaded.eval()(x), official(x))
    # ddcore's own (cached) layout loads the same way
    ours = tmp_path / "ours.safetensors"
    save_file({k: v.contiguous() for k, v in loaded.state_dict().items()}, str(ours))
    torch.testing.assert_close(load_teacher_file(ours).eval()(x), official(x))


def test_wrong_layout_names_missing_and_unexpected_keys_in_one_line(tmp_path):
    state = _official_trunk().state_dict()
    state.pop("layer4.1.bn2.weight")
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    with pytest.raises(UserError) as info:
        load_teacher_file(path)
    msg = str(info.value)
    assert "\n" not in msg and "synset.teacher.path" in msg
    assert "1 missing key(s) (layer4.1.bn2.weight)" in msg and "1 unexpected key(s) (layer5.0.conv1.weight)" in msg
    state = _official_trunk().state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(state, path)
    with pytest.raises(UserError, match=r"wrong shape .*layer1\.0\.conv1\.weight \[64, 64, 5, 5\]"):
        load_teacher_file(path)


def test_key_depends_on_the_normalisation_the_teacher_trains_with(tmp_path):
    from ddcore_krr.teacher import teacher_cache_key

    a = teacher_cache_key(TINY_TEACHER, "fp", ((0.5, 0.5, 0.5), (0.2023, 0.1994, 0.2010)))
    b = teacher_cache_key(TINY_TEACHER, "fp", ((0.5, 0.5, 0.5), (0.2470, 0.2435, 0.2616)))
    assert a != b
    build = _build(tmp_path)
    first = build_teacher(TINY_TEACHER, build)
    build.info = attrs.evolve(build.info, std=tuple(2 * v for v in build.info.std))
    second = build_teacher(TINY_TEACHER, build)
    assert second.source == "trained" and second.key != first.key  # not the cached teacher of the other constants
