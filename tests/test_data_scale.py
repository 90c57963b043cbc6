"""Data at scale: store placements (device / host / mmap) and the parallel, resumable decode into the cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ddcore.data._decode as decode_mod
from ddcore.data.digits import DigitsConfig, DigitsSource
from ddcore.data.imagefolder import ImageFolderConfig, ImageFolderSource
from ddcore.data.placement import choose_placement, open_split
from ddcore.errors import DataError
from ddcore.testing import run_recipe, tiny_recipe


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DDCORE_CACHE", str(tmp_path / "cache"))


def write_folder(root: Path, classes: int = 4, per_class: int = 7, size: int = 12, *, seed: int = 0) -> None:
    """``root/{train,test}/cK/*.png`` with class-dependent brightness; one training image per class is larger
    (the source resizes it), so the decode does more than copy bytes."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class if split == "train" else 2):
                side = size + 4 if (split == "train" and i == 3) else size
                pixels = np.clip(rng.integers(0, 60, (side, side, 3)) + 40 * c, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def all_draws(data, seed: int = 3) -> list[torch.Tensor]:
    """Everything the engine and the components draw from a split, for one seed."""
    out = []
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        batch = data.sample_per_class(3, g)
        out += [batch.images, batch.labels, batch.indices]
    batch = data.sample_per_class(2, g, classes=torch.tensor([2, 0]))
    out += [batch.images, batch.indices]
    batch = data.sample_uniform(5, g)
    out += [batch.images, batch.labels]
    idx = data.random_indices_per_class([1, 2, 0, 3], g)
    out += [idx, data.pixels(idx), data.take(idx).images]
    out += [b.images for b in data.iterate(6, g)]
    out += [data.labels, data.source_index, data.counts, data.offsets]
    return out


def test_every_placement_draws_bit_identical_batches(tmp_path):
    write_folder(tmp_path / "folder")
    source = ImageFolderSource(ImageFolderConfig(root=str(tmp_path / "folder"), resize=8, train_per_class=6), None)
    info = source.info()
    stores = {p: open_split(source, "train", info, torch.device("cpu"), p) for p in ("device", "host", "mmap")}
    assert {p: s.placement for p, s in stores.items()} == {p: p for p in stores}
    mapped = stores["mmap"]
    # the mmap store's pixels are the class-sorted file in the cache, not a copy in this process
    assert mapped._mapping.path.parent == tmp_path / "cache" / "stores"
    assert mapped.images.data_ptr() == torch.from_numpy(mapped._mapping.array).data_ptr()
    want = all_draws(stores["device"])
    for placement in ("host", "mmap"):
        got = all_draws(stores[placement])
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and torch.equal(a, b), placement
    # and a different seed draws something else (the comparison above is not vacuous)
    assert not torch.equal(all_draws(stores["mmap"], seed=4)[0], want[0])


def test_mmap_store_file_is_reused_and_keyed_by_options(tmp_path):
    source = DigitsSource(DigitsConfig(classes=5), None)
    first = open_split(source, "train", source.info(), torch.device("cpu"), "mmap")
    stat = first._mapping.path.stat()
    again = open_split(DigitsSource(DigitsConfig(classes=5), None), "train", source.info(), torch.device("cpu"),
                       "mmap")
    assert again._mapping.path == first._mapping.path and again._mapping.path.stat().st_mtime_ns == stat.st_mtime_ns
    other = DigitsSource(DigitsConfig(classes=4), None)
    fewer = open_split(other, "train", other.info(), torch.device("cpu"), "mmap")
    assert fewer._mapping.path != first._mapping.path and int(fewer.labels.max()) == 3
    # the file holds exactly the in-memory store's pixels
    x, y = DigitsSource(DigitsConfig(classes=5), None).load("train")
    order = torch.argsort(y, stable=True)
    assert torch.equal(first.images, x[order]) and torch.equal(first.labels, y[order])


def mapped_rss_kb(path: Path) -> int:
    """Resident kB of this process's mappings of ``path`` (``/proc/self/smaps``)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ")[0] and len(line.split()) >= 5:  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_mmap_gathers_leave_no_pages_resident(tmp_path):
    source = DigitsSource(DigitsConfig(channels=3, resize=32), None)
    data = open_split(source, "train", source.info(), torch.device("cpu"), "mmap")
    path = data._mapping.path
    assert path.stat().st_size > 64 * 4096  # several pages, so a leak would show
    np.asarray(data._mapping.array).sum()  # touch every page: they are resident now
    assert mapped_rss_kb(path) > 0
    batch = data.take(torch.arange(len(data)))  # a gather of every image releases them again
    assert batch.images.shape[0] == len(data) and mapped_rss_kb(path) == 0


def test_a_damaged_store_file_is_an_error_naming_it(tmp_path):
    source = DigitsSource(DigitsConfig(), None)
    data = open_split(source, "train", source.info(), torch.device("cpu"), "mmap")
    path = data._mapping.path
    del data
    with open(path, "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(DataError, match=f"store file {path} does not match"):
        open_split(DigitsSource(DigitsConfig(), None), "train", source.info(), torch.device("cpu"), "mmap")


def test_auto_placement_follows_size():
    cpu = torch.device("cpu")
    assert choose_placement(1 << 20, cpu) == "device"
    assert choose_placement(1 << 50, cpu) == "mmap"
    assert choose_placement(1 << 50, cpu, mappable=False) == "device"
    assert choose_placement(1 << 30, cpu, ranks_on_host=1 << 20) == "mmap"


def test_bad_store_name_is_a_recipe_error(tmp_path):
    from ddcore.errors import RecipeError

    with pytest.raises(RecipeError, match="store"):
        run_recipe(tiny_recipe(data={"name": "digits", "store": "disk"}), tmp_path)


def test_a_run_is_bit_identical_under_every_placement(tmp_path):
    sets = {}
    for placement in ("device", "host", "mmap"):
        recipe = tiny_recipe(data={"name": "digits", "store": placement}, run={**tiny_recipe()["run"], "iterations": 2})
        del recipe["eval"]
        result = run_recipe(recipe, tmp_path, out_name=placement)
        assert result.run.build_ctx.train.placement == placement
        sets[placement] = result.synset.images
    assert torch.equal(sets["host"], sets["device"]) and torch.equal(sets["mmap"], sets["device"])


# -- decoding ------------------------------------------------------------------------------------------------


def load(root: Path, **options):
    return ImageFolderSource(ImageFolderConfig(root=str(root), **options), None).load("train")


def test_parallel_decode_equals_the_in_process_decode(tmp_path, monkeypatch):
    write_folder(tmp_path / "f", classes=3, per_class=9)
    serial = load(tmp_path / "f", decode_workers=1, cache=False)
    monkeypatch.setattr(decode_mod, "POOL_MIN", 0)
    monkeypatch.setattr(decode_mod, "CHUNK", 4)  # 27 images: 7 chunks over 2 worker processes
    parallel = load(tmp_path / "f", decode_workers=2)
    assert torch.equal(parallel[0], serial[0]) and torch.equal(parallel[1], serial[1])
    assert len(list((tmp_path / "cache" / "decoded").glob("imagefolder-f-train-*.npy"))) == 1


def test_an_interrupted_decode_resumes_with_the_missing_chunks(tmp_path, monkeypatch):
    write_folder(tmp_path / "f", classes=3, per_class=9)
    want = load(tmp_path / "f", cache=False)
    monkeypatch.setattr(decode_mod, "CHUNK", 4)
    real = decode_mod._decode_rows
    calls = []

    def interrupted(items, spec, rows):
        calls.append(list(rows))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(items, spec, rows)

    monkeypatch.setattr(decode_mod, "_decode_rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load(tmp_path / "f", decode_workers=1)
    decoded = tmp_path / "cache" / "decoded"
    assert list(decoded.glob("*.npy.part")) and list(decoded.glob("*.state.json"))
    calls.clear()
    monkeypatch.setattr(decode_mod, "_decode_rows", lambda *a: (calls.append(list(a[2])), real(*a))[1])
    got = load(tmp_path / "f", decode_workers=1)
    # chunks 0-2 were kept; only chunks 3..6 (images 12..26) are decoded again
    assert [r[0] for r in calls] == [12, 16, 20, 24]
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert not list(decoded.glob("*.part")) and not list(decoded.glob("*.state.json"))


def corrupt(root: Path) -> Path:
    bad = root / "train" / "c1" / "002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return bad


def test_an_unreadable_file_fails_with_one_line_naming_it(tmp_path):
    write_folder(tmp_path / "f", classes=3, per_class=5)
    bad = corrupt(tmp_path / "f")
    with pytest.raises(DataError) as err:
        load(tmp_path / "f")
    message = str(err.value)
    assert "\n" not in message and str(bad) in message and 'unreadable = "skip"' in message


def test_an_unreadable_file_is_skipped_with_its_label(tmp_path):
    write_folder(tmp_path / "f", classes=3, per_class=5)
    clean_x, clean_y = load(tmp_path / "f", cache=False)
    bad = corrupt(tmp_path / "f")
    lines = []
    source = ImageFolderSource(ImageFolderConfig(root=str(tmp_path / "f"), unreadable="skip"),
                               type("Build", (), {"log": staticmethod(lines.append), "progress": False})())
    x, y = source.load("train")
    assert len(lines) == 1 and str(bad) in lines[0] and "skipping" in lines[0]
    keep = torch.arange(len(clean_y)) != 7  # c1/002 is file-order image 5 + 2
    assert torch.equal(y, clean_y[keep]) and torch.equal(x, clean_x[keep])
    # a later run reads the cache and drops the same image; the mmap store too
    again = ImageFolderSource(ImageFolderConfig(root=str(tmp_path / "f"), unreadable="skip"), None)
    assert torch.equal(again.load("train")[1], clean_y[keep])
    mapped = open_split(again, "train", again.info(), torch.device("cpu"), "mmap")
    assert torch.equal(mapped.labels, clean_y[keep]) and torch.equal(mapped.images, clean_x[keep])


def test_decode_progress_reports_images_per_second(tmp_path):
    write_folder(tmp_path / "f", classes=2, per_class=3)
    lines = []
    build = type("Build", (), {"log": staticmethod(lines.append), "progress": True})()
    ImageFolderSource(ImageFolderConfig(root=str(tmp_path / "f")), build).load("train")
    assert lines and lines[-1].startswith("decode data source 'imagefolder': 6/6 images")
    assert "images/s" in lines[-1] and "ETA" in lines[-1]


# -- the large-scale recipes, end to end on a stand-in folder of TinyImageNet's shape ---------------------------

SCALE_RECIPES = ["tinyimagenet_dm", "tinyimagenet_idm", "tinyimagenet_idm_iid", "imagenet64_dm"]
#: test scale: 2 steps, 1 image per class, a narrow ConvNet-4 (64x64 kept), 1-epoch evaluation
TINY = ["run.iterations=2", "run.checkpoint_every=0", "run.compile=off", "synset.ipc=1", "real.batch=2",
        "backbone.width=8", "eval.num_models=1", "eval.epochs=1", "eval.models=[\"ConvNetD1\"]", "eval.compile=off",
        "eval.baselines=[]"]
PER_RECIPE = {
    # the evaluation is the same component everywhere: one recipe runs it, the others stop after distilling
    "tinyimagenet_dm": ["run.eval_at_end=true"],
    "tinyimagenet_idm": ["sampler.trained_bs=16", "sampler.model_train_steps=1", "run.eval_at_end=false"],
    "tinyimagenet_idm_iid": ["sampler.trained_bs=16", "sampler.model_train_steps=1", "objective[3].pool.size=1",
                             "objective[3].pool.epochs=1", "objective[3].pool.batch=128",
                             "objective[3].pool.arch={name=\"ConvNetD1\", width=8}", "run.iterations=1",
                             "run.eval_at_end=false"],
    # the recipe resizes every image to 64x64 while decoding, and a split of ImageNet's size is memory-mapped
    "imagenet64_dm": ["data.store=mmap", "data.decode_workers=2", "run.eval_at_end=false"],
}


@pytest.fixture(scope="module")
def standin_tiny_imagenet(tmp_path_factory):
    """TinyImageNet's layout and shape with random pixels: 200 wnid folders of 64x64 JPEGs (2 per class),
    val/images + val_annotations.txt (1 per class), words.txt; two training images are 72x80 (resized)."""
    root = tmp_path_factory.mktemp("standin") / "tiny-imagenet-200"
    rng = np.random.default_rng(0)
    words, notes = [], []
    (root / "val" / "images").mkdir(parents=True)
    for c in range(200):
        wnid = f"n{c:08d}"
        words.append(f"{wnid}\tclass {c}, thing")
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(2):
            shape = (72, 80, 3) if (c, i) in ((5, 0), (150, 1)) else (64, 64, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{wnid}_{i}.JPEG")
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "val" / "images" / f"v{c}.JPEG")
        notes.append(f"v{c}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "words.txt").write_text("\n".join(words) + "\n")
    (root / "val" / "val_annotations.txt").write_text("\n".join(notes) + "\n")
    return root


@pytest.mark.parametrize("name", SCALE_RECIPES)
def test_scale_recipe_checks_and_runs_on_a_standin(name, standin_tiny_imagenet, tmp_path, capsys):
    from ddcore.cli import main

    recipe = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.toml"
    assert main(["recipe", "check", str(recipe)]) in (0, None), capsys.readouterr().err
    overrides = [f"data.root={standin_tiny_imagenet}", *TINY, *PER_RECIPE.get(name, [])]
    result = run_recipe(recipe, tmp_path, overrides)
    train = result.run.build_ctx.train
    assert train.num_classes == 200 and len(train) == 400 and tuple(train.images.shape[1:]) == (3, 64, 64)
    assert train.placement == ("mmap" if name == "imagenet64_dm" else "device")
    assert result.synset.images.shape[0] == 200 and torch.isfinite(result.synset.images).all()
    if name == "tinyimagenet_dm":
        evaluation = result.results["synset"]
        assert evaluation["num_models"] == 1 and 0.0 <= evaluation["mean"] <= 100.0


def test_npz_jpeg_payloads_decode_in_parallel_and_name_a_damaged_image(tmp_path, monkeypatch):
    import io

    from ddcore.data.npz import NpzConfig, NpzSource

    rng = np.random.default_rng(1)
    blobs = []
    for i in range(18):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(buf, format="JPEG")
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    folder = tmp_path / "enc"
    folder.mkdir()

    def write(parts):
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in parts])]).astype(np.int64)
        for split in ("train", "test"):
            np.savez(folder / f"{split}.npz", jpeg=np.concatenate(parts), offsets=offsets, y=np.arange(18) % 3)

    write(blobs)
    serial = NpzSource(NpzConfig(path=str(folder), decode_workers=1, cache=False), None).load("train")
    monkeypatch.setattr(decode_mod, "POOL_MIN", 0)
    monkeypatch.setattr(decode_mod, "CHUNK", 4)
    parallel = NpzSource(NpzConfig(path=str(folder), decode_workers=2), None).load("train")
    assert torch.equal(parallel[0], serial[0]) and torch.equal(parallel[1], serial[1])
    write(blobs[:11] + [blobs[11][:40]] + blobs[12:])  # image 11 cut short
    with pytest.raises(DataError, match=r"train\.npz image 11: .*Error"):
        NpzSource(NpzConfig(path=str(folder), decode_workers=2), None).load("train")
