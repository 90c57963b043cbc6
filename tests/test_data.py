"""Data sources (npz, digits, torchvision, imagefolder) and the on-device class-indexed store."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ddcore.builtin.data import ddcore_register_data_sources
from ddcore.data.transforms import channel_stats, select_indices
from ddcore.data.constants import KNOWN_STATS
from ddcore.data.digits import DigitsConfig, DigitsSource
from ddcore.data.imagefolder import ImageFolderConfig, ImageFolderSource
from ddcore.data.npz import NpzConfig, NpzSource
from ddcore.data.store import ClassIndexedData
from ddcore.data.torchvision_source import TorchvisionConfig, TorchvisionSource
from ddcore.errors import DataError, RecipeError
from ddcore.registry import Registry
from ddcore.testing import require_datasets
from ddcore.types import DatasetInfo


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own decode cache, so nothing leaks into ~/.cache or between tests."""
    monkeypatch.setenv("DDCORE_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------------------------------
# ClassIndexedData
# ---------------------------------------------------------------------------------------------------------

COUNTS = [5, 9, 3, 7]  # deliberately unequal


def make_store(counts=COUNTS, shape=(3, 4, 4), seed=0, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3)):
    """A store over random images whose labels are shuffled (so the store has to sort them)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    labels = labels[torch.randperm(len(labels), generator=g)]
    images = torch.randint(0, 256, (len(labels), *shape), generator=g, dtype=torch.uint8)
    info = DatasetInfo(name="toy", num_classes=len(counts), channels=shape[0], height=shape[1], width=shape[2],
                       mean=mean[: shape[0]], std=std[: shape[0]])
    return ClassIndexedData(images, labels, info, "cpu"), images, labels


def test_store_sorts_by_class_and_keeps_the_mapping():
    store, images, labels = make_store()
    assert len(store) == sum(COUNTS) and store.num_classes == 4
    assert store.class_counts == COUNTS
    assert torch.equal(store.counts, torch.tensor(COUNTS))
    assert torch.equal(store.offsets, torch.tensor([0, 5, 14, 17]))
    assert torch.all(store.labels[1:] >= store.labels[:-1])
    assert torch.equal(store.images, images[store.source_index])
    assert torch.equal(store.labels, labels[store.source_index])
    # stable: within a class, the input order is kept
    for c in range(4):
        src = store.source_index[store.offsets[c]:store.offsets[c] + store.counts[c]]
        assert torch.all(src[1:] > src[:-1])


def test_normalize_matches_the_textbook_formula():
    store, images, _ = make_store()
    mean = torch.tensor(store.info.mean).view(1, -1, 1, 1)
    std = torch.tensor(store.info.std).view(1, -1, 1, 1)
    expected = (images.float() / 255 - mean) / std
    got = store.normalize(images)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(store.denormalize(got), images.float() / 255, atol=1e-5, rtol=1e-5)


def test_sample_per_class_is_class_major_distinct_and_consistent():
    store, _, _ = make_store()
    batch = store.sample_per_class(3, torch.Generator().manual_seed(1))
    assert batch.per_class == 3 and len(batch) == 12
    assert torch.equal(batch.labels, torch.arange(4).repeat_interleave(3))
    assert torch.equal(store.labels[batch.indices], batch.labels)
    torch.testing.assert_close(batch.images, store.normalize(store.images[batch.indices]))
    for block in batch.indices.view(4, 3):
        assert len(set(block.tolist())) == 3
    assert batch.images.view(4, 3, *store.info.image_shape).shape[:2] == (4, 3)


def test_sample_per_class_caps_at_the_smallest_class():
    store, _, _ = make_store()
    batch = store.sample_per_class(100, torch.Generator().manual_seed(0))
    assert batch.per_class == min(COUNTS) == 3
    assert torch.equal(batch.labels, torch.arange(4).repeat_interleave(3))
    # class 2 has exactly 3 images: all of them come back, once each
    block = batch.indices.view(4, 3)[2]
    assert sorted(block.tolist()) == list(range(14, 17))


def test_sample_per_class_is_deterministic_and_seed_dependent():
    store, _, _ = make_store(counts=[40, 50, 60])
    a = store.sample_per_class(10, torch.Generator().manual_seed(7)).indices
    b = store.sample_per_class(10, torch.Generator().manual_seed(7)).indices
    c = store.sample_per_class(10, torch.Generator().manual_seed(8)).indices
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sample_per_class_subset_equals_the_sliced_full_draw():
    store, _, _ = make_store()
    full = store.sample_per_class(2, torch.Generator().manual_seed(3))
    subset = store.sample_per_class(2, torch.Generator().manual_seed(3), classes=torch.tensor([3, 1]))
    assert subset.per_class == 2
    assert torch.equal(subset.indices, full.indices.view(4, 2)[[3, 1]].reshape(-1))
    assert torch.equal(subset.labels, torch.tensor([3, 3, 1, 1]))
    torch.testing.assert_close(subset.images, full.images.view(4, 2, 3, 4, 4)[[3, 1]].reshape(4, 3, 4, 4))


def test_sample_per_class_reaches_every_image_and_no_padding_slot():
    store, _, _ = make_store()
    g = torch.Generator().manual_seed(0)
    seen = torch.zeros(len(store), dtype=torch.bool)
    for _ in range(60):
        batch = store.sample_per_class(3, g)
        assert torch.equal(store.labels[batch.indices], batch.labels)  # a padding slot would land in a wrong class
        seen[batch.indices] = True
    assert bool(seen.all())


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(1, 12), min_size=1, max_size=6), per_class=st.integers(1, 15),
       seed=st.integers(0, 2**31 - 1))
def test_sample_per_class_property(counts, per_class, seed):
    store, _, _ = make_store(counts=counts, shape=(1, 2, 2), seed=seed % 1000)
    batch = store.sample_per_class(per_class, torch.Generator().manual_seed(seed))
    n = min(per_class, min(counts))
    assert batch.per_class == n
    assert torch.equal(batch.labels, torch.arange(len(counts)).repeat_interleave(n))
    assert torch.equal(store.labels[batch.indices], batch.labels)
    blocks = batch.indices.view(len(counts), n)
    assert all(len(set(b.tolist())) == n for b in blocks)


def test_sample_per_class_rejects_an_empty_class():
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    info = DatasetInfo(name="gap", num_classes=3, channels=1, height=2, width=2, mean=(0.5,), std=(0.5,))
    store = ClassIndexedData(images, torch.tensor([0, 0, 2, 2]), info)
    with pytest.raises(DataError, match=r"\[1\]"):
        store.sample_per_class(1, torch.Generator().manual_seed(0))


def test_random_indices_per_class():
    store, _, _ = make_store()
    g = torch.Generator().manual_seed(5)
    idx = store.random_indices_per_class([2, 0, 3, 7], g)
    assert idx.dtype == torch.int64
    assert torch.equal(store.labels[idx], torch.tensor([0, 0, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3]))
    assert len(set(idx.tolist())) == 12
    same = store.random_indices_per_class([2, 0, 3, 7], torch.Generator().manual_seed(5))
    assert torch.equal(idx, same)
    every = store.random_indices_per_class(3, g)
    assert torch.equal(store.labels[every], torch.arange(4).repeat_interleave(3))
    with pytest.raises(DataError, match="class 2"):
        store.random_indices_per_class([1, 1, 4, 1], g)
    with pytest.raises(DataError):
        store.random_indices_per_class([1, 1], g)


def test_sample_uniform_take_and_iterate():
    store, _, _ = make_store()
    g = torch.Generator().manual_seed(0)
    batch = store.sample_uniform(10, g)
    assert len(batch) == 10 and batch.per_class is None
    assert len(set(batch.indices.tolist())) == 10
    assert len(store.sample_uniform(1000, g)) == len(store)

    taken = store.take(torch.tensor([0, 16, 3]))
    assert torch.equal(taken.labels, store.labels[[0, 16, 3]])
    torch.testing.assert_close(taken.images, store.normalize(store.images[[0, 16, 3]]))

    ordered = list(store.iterate(5))
    assert [len(b) for b in ordered] == [5, 5, 5, 5, 4]
    assert torch.equal(torch.cat([b.indices for b in ordered]), torch.arange(len(store)))
    shuffled = torch.cat([b.indices for b in store.iterate(6, torch.Generator().manual_seed(1))])
    assert sorted(shuffled.tolist()) == list(range(len(store)))
    assert not torch.equal(shuffled, torch.arange(len(store)))


def test_store_rejects_bad_inputs():
    info = DatasetInfo(name="x", num_classes=2, channels=1, height=2, width=2, mean=(0.5,), std=(0.5,))
    with pytest.raises(DataError, match="uint8"):
        ClassIndexedData(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), info)
    with pytest.raises(DataError, match="labels"):
        ClassIndexedData(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 2]), info)
    with pytest.raises(DataError, match="info"):
        ClassIndexedData(torch.zeros(2, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1]), info)


# ---------------------------------------------------------------------------------------------------------
# Common option helpers
# ---------------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(labels=st.lists(st.integers(0, 5), max_size=40), classes=st.integers(0, 7), per_class=st.integers(0, 6))
def test_select_indices_matches_a_plain_loop(labels, classes, per_class):
    seen: dict[int, int] = {}
    expected = []
    for i, y in enumerate(labels):
        if classes and y >= classes:
            continue
        seen[y] = seen.get(y, 0) + 1
        if per_class and seen[y] > per_class:
            continue
        expected.append(i)
    got = select_indices(np.array(labels, dtype=np.int64), classes=classes, per_class=per_class)
    if got is None:
        assert expected == list(range(len(labels)))
    else:
        assert got.tolist() == expected


def test_channel_stats():
    images = torch.tensor([[[[0, 255]]], [[[255, 255]]]], dtype=torch.uint8)  # one channel: 0, 1, 1, 1
    (mean,), (std,) = channel_stats(images)
    assert mean == pytest.approx(0.75)
    assert std == pytest.approx(np.std([0, 1, 1, 1]))


# ---------------------------------------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------------------------------------


def toy_pixels(n: int, h: int = 6, w: int = 5, c: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def write_decoded(folder: Path, *, train_labels, test_labels, c: int = 1, names=None, compressed=True):
    folder.mkdir(parents=True, exist_ok=True)
    save = np.savez_compressed if compressed else np.savez
    arrays = {}
    for split, labels, seed in (("train", train_labels, 0), ("test", test_labels, 1)):
        x = toy_pixels(len(labels), c=c, seed=seed)
        save(folder / f"{split}.npz", x=x, y=np.asarray(labels, dtype=np.int64))
        arrays[split] = (x, np.asarray(labels, dtype=np.int64))
    if names:
        (folder / "classes.txt").write_text("\n".join(names) + "\n")
    return arrays


def encode(images: np.ndarray, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    blobs = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(buf, format=fmt, quality=90)
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    return np.concatenate(blobs), offsets


def smooth_rgb(n: int, seed: int) -> np.ndarray:
    """RGB images that survive JPEG well (smooth gradients + a per-image colour)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:16, 0:16]
    base = np.stack([xx * 8, yy * 8, (xx + yy) * 4], -1).astype(np.float64)
    colours = rng.integers(0, 100, (n, 1, 1, 3))
    return np.clip(base[None] + colours, 0, 255).astype(np.uint8)


def test_npz_decoded_layout(tmp_path):
    train_y = [0, 1, 2, 1, 0, 2, 2, 1, 0, 0]
    arrays = write_decoded(tmp_path / "toyset", train_labels=train_y, test_labels=[2, 1, 0, 0],
                           names=["a", "b", "c"])
    src = NpzSource(NpzConfig(path=str(tmp_path / "toyset")), None)
    info = src.info()
    assert (info.name, info.num_classes, info.image_shape, info.class_names) == ("toyset", 3, (1, 6, 5),
                                                                                    ("a", "b", "c"))
    x, y = src.load("train")
    assert x.dtype == torch.uint8 and x.shape == (10, 1, 6, 5) and y.dtype == torch.int64
    assert torch.equal(x, torch.from_numpy(arrays["train"][0]).permute(0, 3, 1, 2))
    assert y.tolist() == train_y
    # an unknown dataset: constants come from the training split
    mean, std = channel_stats(x)
    assert info.mean == pytest.approx(mean) and info.std == pytest.approx(std)
    xt, yt = src.load("test")
    assert xt.shape == (4, 1, 6, 5) and yt.tolist() == [2, 1, 0, 0]


def test_npz_common_options(tmp_path):
    train_y = [0, 1, 2, 1, 0, 2, 2, 1, 0, 0]
    arrays = write_decoded(tmp_path / "toyset", train_labels=train_y, test_labels=[2, 1, 0, 0, 1, 1])
    cfg = NpzConfig(path=str(tmp_path / "toyset"), classes=2, train_per_class=2, test_per_class=1, resize=12,
                    channels=3)
    src = NpzSource(cfg, None)
    info = src.info()
    assert info.num_classes == 2 and info.image_shape == (3, 12, 12) and info.class_names == ()
    x, y = src.load("train")
    assert y.tolist() == [0, 1, 1, 0]  # first two of classes 0 and 1, file order
    assert x.shape == (4, 3, 12, 12)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    # constants of the processed training split: replicated gray gives three equal channels
    assert len(set(info.mean)) == 1 and len(info.mean) == 3
    xt, yt = src.load("test")
    assert yt.tolist() == [1, 0]
    # resize is bilinear: a constant image stays constant
    flat = np.full((2, 6, 5, 1), 77, dtype=np.uint8)
    (tmp_path / "flat").mkdir()
    for split in ("train", "test"):
        np.savez(tmp_path / "flat" / f"{split}.npz", x=flat, y=np.array([0, 1]))
    fx, _ = NpzSource(NpzConfig(path=str(tmp_path / "flat"), resize=3), None).load("train")
    assert fx.shape == (2, 1, 3, 3) and bool((fx == 77).all())
    del arrays


def test_npz_known_folder_names_use_standard_constants(tmp_path):
    write_decoded(tmp_path / "mnist", train_labels=[0, 1, 1], test_labels=[0, 1])
    info = NpzSource(NpzConfig(path=str(tmp_path / "mnist")), None).info()
    assert (info.mean, info.std) == KNOWN_STATS["MNIST"]
    rgb = NpzSource(NpzConfig(path=str(tmp_path / "mnist"), channels=3, classes=1, resize=32), None).info()
    assert rgb.mean == (0.1307,) * 3 and rgb.std == (0.3081,) * 3 and rgb.image_shape == (3, 32, 32)
    write_decoded(tmp_path / "cifar10-jpeg", train_labels=[0, 1], test_labels=[0, 1], c=3)
    cifar = NpzSource(NpzConfig(path=str(tmp_path / "cifar10-jpeg")), None).info()
    assert cifar.mean == (0.4914, 0.4822, 0.4465) and cifar.std == (0.2023, 0.1994, 0.2010)
    override = NpzSource(NpzConfig(path=str(tmp_path / "cifar10-jpeg"), mean=(0.5,), std=(0.25,)), None).info()
    assert override.mean == (0.5,) * 3 and override.std == (0.25,) * 3
    with pytest.raises(DataError, match="both"):
        NpzSource(NpzConfig(path=str(tmp_path / "cifar10-jpeg"), mean=(0.5,)), None).info()
    with pytest.raises(DataError, match="channels"):
        NpzSource(NpzConfig(path=str(tmp_path / "cifar10-jpeg"), mean=(0.1, 0.2), std=(0.3, 0.4)), None).info()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_npz_encoded_layout_decodes_with_pillow_and_caches(tmp_path, fmt):
    folder = tmp_path / "enc"
    folder.mkdir()
    originals = {}
    for split, n, seed in (("train", 12, 0), ("test", 6, 1)):
        imgs = smooth_rgb(n, seed)
        blob, offsets = encode(imgs, fmt)
        np.savez(folder / f"{split}.npz", jpeg=blob, offsets=offsets, y=np.arange(n) % 3)
        originals[split] = (imgs, blob, offsets)
    src = NpzSource(NpzConfig(path=str(folder)), None)
    info = src.info()
    assert info.image_shape == (3, 16, 16) and info.num_classes == 3
    x, y = src.load("train")
    assert x.shape == (12, 3, 16, 16) and y.tolist() == [i % 3 for i in range(12)]
    imgs, blob, offsets = originals["train"]
    pillow = np.stack([np.asarray(Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
                       for i in range(12)])
    assert torch.equal(x, torch.from_numpy(pillow).permute(0, 3, 1, 2))
    if fmt == "PNG":
        assert np.array_equal(pillow, imgs)
    else:
        assert np.abs(pillow.astype(int) - imgs.astype(int)).mean() < 4
    cached = list((tmp_path / "cache" / "decoded").glob("npz-enc-train-*.npy"))
    assert len(cached) == 1
    again, _ = NpzSource(NpzConfig(path=str(folder)), None).load("train")
    assert torch.equal(again, x)
    # a changed archive gets a new cache entry (size/mtime/content key), not the stale pixels
    new_imgs = smooth_rgb(12, 5)[:, ::-1].copy()
    new_blob, new_offsets = encode(new_imgs, fmt)
    np.savez(folder / "train.npz", jpeg=new_blob, offsets=new_offsets, y=np.arange(12) % 3)
    changed, _ = NpzSource(NpzConfig(path=str(folder)), None).load("train")
    assert not torch.equal(changed, x)
    assert len(list((tmp_path / "cache" / "decoded").glob("npz-enc-train-*.npy"))) == 2


def test_npz_encoded_subset_decode_matches_full_decode(tmp_path):
    folder = tmp_path / "enc"
    folder.mkdir()
    imgs = smooth_rgb(30, 0)
    blob, offsets = encode(imgs, "JPEG")
    labels = np.random.default_rng(0).integers(0, 3, 30)
    for split in ("train", "test"):
        np.savez(folder / f"{split}.npz", jpeg=blob, offsets=offsets, y=labels)
    small, ys = NpzSource(NpzConfig(path=str(folder), test_per_class=2, cache=False), None).load("test")
    assert not (tmp_path / "cache").exists()  # a small subset is decoded directly, without caching
    full, yf = NpzSource(NpzConfig(path=str(folder)), None).load("test")
    keep = select_indices(labels, per_class=2)
    assert torch.equal(small, full[torch.from_numpy(keep)]) and torch.equal(ys, yf[torch.from_numpy(keep)])


def test_npz_shards_are_concatenated_in_numeric_order(tmp_path):
    folder = tmp_path / "sharded"
    folder.mkdir()
    parts = [toy_pixels(3, seed=k) for k in range(11)]
    for k, x in enumerate(parts):
        np.savez(folder / f"train-{k}.npz", x=x, y=np.full(3, k % 2))
    np.savez(folder / "test.npz", x=parts[0], y=np.zeros(3, dtype=np.int64))
    x, y = NpzSource(NpzConfig(path=str(folder)), None).load("train")
    assert torch.equal(x, torch.from_numpy(np.concatenate(parts)).permute(0, 3, 1, 2))
    assert y.tolist() == [k % 2 for k in range(11) for _ in range(3)]


def test_npz_missing_folder_is_a_clear_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DDCORE_DATA", str(tmp_path))
    with pytest.raises(DataError) as err:
        NpzSource(NpzConfig(path="no-such-dataset"), None)
    msg = str(err.value)
    assert "no-such-dataset" in msg and str(tmp_path / "no-such-dataset") in msg and "DDCORE_DATA" in msg
    monkeypatch.delenv("DDCORE_DATA")
    with pytest.raises(DataError, match="DDCORE_DATA is not set"):
        NpzSource(NpzConfig(path="no-such-dataset"), None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="train.npz"):
        NpzSource(NpzConfig(path=str(tmp_path / "empty")), None).info()
    (tmp_path / "odd").mkdir()
    np.savez(tmp_path / "odd" / "train.npz", images=np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(DataError, match="keys"):
        NpzSource(NpzConfig(path=str(tmp_path / "odd")), None).info()


def test_npz_relative_path_resolves_against_ddcore_data_then_the_recipe(tmp_path, monkeypatch):
    write_decoded(tmp_path / "data" / "toyset", train_labels=[0, 1], test_labels=[1, 0])
    monkeypatch.setenv("DDCORE_DATA", str(tmp_path / "data"))
    assert NpzSource(NpzConfig(path="toyset"), None).folder == tmp_path / "data" / "toyset"
    monkeypatch.setenv("DDCORE_DATA", str(tmp_path / "elsewhere"))
    write_decoded(tmp_path / "recipes" / "toyset", train_labels=[0, 1], test_labels=[1, 0])

    class FakeRecipe:
        file = str(tmp_path / "recipes" / "r.toml")

    class FakeBuild:
        recipe = FakeRecipe()

    assert NpzSource(NpzConfig(path="toyset"), FakeBuild()).folder == tmp_path / "recipes" / "toyset"


def test_shared_mnist_through_ddcore_data(tmp_path, monkeypatch):
    """CI sets DDCORE_DATA to shared/datasets: read the real MNIST (a missing/unreadable folder fails)."""
    root = os.environ.get("DDCORE_DATA")
    if os.environ.get("CI"):
        require_datasets("mnist")  # CI must read the real data
    if not (root and (Path(root) / "mnist").is_dir()):
        write_decoded(tmp_path / "data" / "mnist", train_labels=np.arange(40) % 10, test_labels=np.arange(100) % 10,
                      names=[str(d) for d in range(10)])
        monkeypatch.setenv("DDCORE_DATA", str(tmp_path / "data"))
        height, width = 6, 5
    else:
        height, width = 28, 28
    src = NpzSource(NpzConfig(path="mnist", test_per_class=10), None)
    info = src.info()
    assert info.num_classes == 10 and info.image_shape == (1, height, width)
    assert (info.mean, info.std) == ((0.1307,), (0.3081,))
    assert info.class_names == tuple(str(d) for d in range(10))
    x, y = src.load("test")
    assert x.shape == (100, 1, height, width) and x.dtype == torch.uint8
    assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), 10))
    store = ClassIndexedData(x, y, info, "cpu")
    batch = store.sample_per_class(4, torch.Generator().manual_seed(0))
    assert batch.images.shape == (40, 1, height, width)


# ---------------------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------------------


def test_digits_split_shapes_and_constants():
    src = DigitsSource(DigitsConfig(), None)
    info = src.info()
    assert (info.name, info.num_classes, info.image_shape) == ("digits", 10, (1, 8, 8))
    x, y = src.load("train")
    xt, yt = src.load("test")
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8)
    assert len(x) + len(xt) == 1797
    assert int(x.max()) == 255 and int(x.min()) == 0
    from sklearn.datasets import load_digits

    per_class = np.bincount(load_digits().target)
    train_counts = torch.bincount(y, minlength=10).numpy()
    assert np.array_equal(train_counts + torch.bincount(yt, minlength=10).numpy(), per_class)
    assert np.array_equal(train_counts, np.rint(per_class * 0.8).astype(int))  # stratified 80/20
    assert info.mean == pytest.approx(channel_stats(x)[0]) and info.std == pytest.approx(channel_stats(x)[1])
    x2, y2 = DigitsSource(DigitsConfig(), None).load("train")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = DigitsSource(DigitsConfig(split_seed=1), None).load("train")
    assert not torch.equal(x3, x)


def test_digits_options():
    src = DigitsSource(DigitsConfig(classes=3, train_per_class=5, test_per_class=2, resize=16, channels=3), None)
    info = src.info()
    assert info.num_classes == 3 and info.image_shape == (3, 16, 16) and info.class_names == ("0", "1", "2")
    x, y = src.load("train")
    assert x.shape == (15, 3, 16, 16) and torch.equal(torch.bincount(y), torch.full((3,), 5))
    xt, yt = src.load("test")
    assert xt.shape == (6, 3, 16, 16) and set(yt.tolist()) == {0, 1, 2}
    with pytest.raises(DataError, match="only 10 classes"):
        DigitsSource(DigitsConfig(classes=11), None).info()


# ---------------------------------------------------------------------------------------------------------
# torchvision (error path only: tests never download)
# ---------------------------------------------------------------------------------------------------------


def test_torchvision_missing_files_without_download(tmp_path):
    src = TorchvisionSource(TorchvisionConfig(dataset="CIFAR10", root=str(tmp_path), download=False), None)
    info = src.info()  # static facts need no files
    assert info.num_classes == 10 and (info.mean, info.std) == KNOWN_STATS["CIFAR10"]
    with pytest.raises(DataError) as err:
        src.load("train")
    assert str(tmp_path) in str(err.value) and "download" in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# imagefolder
# ---------------------------------------------------------------------------------------------------------


def write_png(path: Path, value: int, size=(10, 8), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3) if mode == "RGB" else (size[1], size[0]), value, dtype=np.uint8)
    Image.fromarray(arr).save(path)


def test_imagefolder(tmp_path):
    root = tmp_path / "tiny"
    for c, cls in enumerate(["cat", "dog", "emu"]):
        for i in range(3):
            write_png(root / "train" / cls / f"{i}.png", 40 * c + i)
        write_png(root / "val" / cls / "x.png", 40 * c + 9)
    write_png(root / "train" / "dog" / "sub" / "deep.png", 99, size=(20, 16))  # other size, nested
    write_png(root / "train" / "emu" / "2.png", 82, mode="L")  # a gray file in an RGB set is converted
    src = ImageFolderSource(ImageFolderConfig(root=str(root)), None)
    info = src.info()
    assert (info.num_classes, info.image_shape, info.class_names) == (3, (3, 8, 10), ("cat", "dog", "emu"))
    x, y = src.load("train")
    assert x.shape == (10, 3, 8, 10) and y.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert x[:, 0, 0, 0].tolist() == [0, 1, 2, 40, 41, 42, 99, 80, 81, 82]
    xt, yt = src.load("test")  # val/ stands in for test/
    assert yt.tolist() == [0, 1, 2] and xt[:, 0, 0, 0].tolist() == [9, 49, 89]
    small = ImageFolderSource(ImageFolderConfig(root=str(root), resize=4, classes=2, train_per_class=1), None)
    xs, ys = small.load("train")
    assert small.info().image_shape == (3, 4, 4) and xs.shape == (2, 3, 4, 4) and ys.tolist() == [0, 1]
    assert list((tmp_path / "cache" / "decoded").glob("imagefolder-tiny-*.npy"))


def test_imagefolder_tinyimagenet_val_layout_and_errors(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    for wnid in ("n01", "n02"):
        write_png(root / "train" / wnid / "images" / f"{wnid}_0.JPEG", 10, size=(8, 8))
    write_png(root / "val" / "images" / "val_0.JPEG", 20, size=(8, 8))
    write_png(root / "val" / "images" / "val_1.JPEG", 30, size=(8, 8))
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t8\t8\nval_1.JPEG\tn01\t0\t0\t8\t8\n")
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tsalamander\n")
    src = ImageFolderSource(ImageFolderConfig(root=str(root)), None)
    info = src.info()
    assert info.class_names == ("goldfish", "salamander") and info.image_shape == (3, 8, 8)
    assert (info.mean, info.std) == KNOWN_STATS["TinyImageNet"]  # known folder name, RGB
    xt, yt = src.load("test")
    assert yt.tolist() == [0, 1] and xt[:, 0, 0, 0].tolist() == [30, 20]  # sorted by class, val/ via annotations
    with pytest.raises(DataError, match="train/"):
        ImageFolderSource(ImageFolderConfig(root=str(tmp_path)), None)
    with pytest.raises(DataError, match="not found"):
        ImageFolderSource(ImageFolderConfig(root=str(tmp_path / "missing")), None)


# ---------------------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------------------


def test_sources_are_registered_with_their_configs(tmp_path):
    registry = Registry()
    ddcore_register_data_sources(registry.bind("data", "builtin", "ddcore"))
    assert registry.names("data") == ["digits", "imagefolder", "npz", "torchvision"]
    entry = registry.get("data", "digits")
    config = entry.structure({"classes": 2, "mean": [0.5], "std": [0.5]}, key="data")
    source = entry.factory(config, None)
    assert source.info().num_classes == 2 and source.info().mean == (0.5,)
    with pytest.raises(RecipeError, match="data.channels"):
        entry.structure({"channels": 2}, key="data")
    with pytest.raises(RecipeError, match="data.train_per_class"):
        entry.structure({"train_per_class": -1}, key="data")
    with pytest.raises(RecipeError, match="data.path"):
        registry.get("data", "npz").structure({}, key="data")
    with pytest.raises(RecipeError, match="data.dataset"):
        registry.get("data", "torchvision").structure({"dataset": "ImageNet"}, key="data")
