"""Data at scale: decode throughput, and peak RSS / DM step time by dataset size under each store placement.

    python bench/bench_data_scale.py --root /big/disk/bench-data decode --images 20000
    python bench/bench_data_scale.py --root /big/disk/bench-data steps --sizes 10000,100000,1000000
    python bench/bench_data_scale.py --root /big/disk/bench-data clean          # deletes everything it generated

``decode``: writes an ImageFolder of ``--images`` 64x64 JPEGs (200 class folders; smooth random colour fields
plus noise, quality 90) once, then decodes it with the ``imagefolder`` source into a fresh cache, with
``decode_workers = 1`` and with every core, alternately (``--repeats`` times each); prints images/s (median).

``steps``: for each size writes a stand-in training split *directly as a decoded cache* (raw uint8 NHWC, 64x64x3,
200 classes in class blocks as an ImageFolder lists them; random pixels: timing does not depend on them), then for
each placement runs one child process that builds the engine's ``Run`` on it (recipe: DM on TinyImageNet's shape,
ConvNet depth 4, width ``--width`` (official: 128), ipc 1, siamese DSA, eager; ``--real-batch`` real images per
class) and reports

* ``build_s``: the data load (device/host: read into memory, class-sort; mmap: map the store file, which the
  parent built beforehand: ``store_build_s``);
* ``sample_ms``: median of ``--draws`` per-class real draws (the placement-dependent part of a step);
* ``step_s``: median of ``--steps`` DM steps after one warm-up step;
* ``peak_rss_mb``: the child's peak resident set (``ru_maxrss``: anonymous plus mapped file pages);
  ``anon_mb`` / ``file_mb``: its RssAnon / RssFile at the end.

``device`` and ``host`` hold the whole split in the process (on a CPU run both live in RAM; ``host`` differs only
on CUDA, where it is pinned host memory), so they are run only while ``size * 12 KiB * 3`` (the load holds up to
three copies) stays under ``--ram-fraction`` of the available memory; bigger rows print why they were not run.
Run it under ``nice -n 10``; the children inherit it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

CLASSES = 200
SIDE = 64
ROW = SIDE * SIDE * 3


# -- the stand-in data source (a ProcessedSource over a raw decoded file) -------------------------------------

def standin_source():
    import attrs

    from ddcore.config import option
    from ddcore.data.source import CommonDataConfig, NativeLayout, ProcessedSource

    @attrs.define(frozen=True, kw_only=True)
    class StandInConfig(CommonDataConfig):
        path: str = option(doc="raw uint8 [N, 64, 64, 3] file")

    class StandIn(ProcessedSource):
        source_name = "standin"

        def __init__(self, config, build=None):
            super().__init__(config, build)
            self.path = Path(config.path)
            self.n = self.path.stat().st_size // ROW

        def native(self):
            return NativeLayout(name="standin", channels=3, height=SIDE, width=SIDE, num_classes=CLASSES,
                                stats=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))

        def _array(self):
            return np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.n, SIDE, SIDE, 3))

        def read_labels(self, split):
            n = self.n if split == "train" else 2 * CLASSES
            return np.repeat(np.arange(CLASSES), n // CLASSES)

        def read_images(self, split, indices):
            arr = self._array()
            if split == "test":
                arr = arr[np.arange(2 * CLASSES) * (self.n // (2 * CLASSES))]
            return np.array(arr if indices is None else arr[indices])

        def read_all(self, split):
            return self._array() if split == "train" else self.read_images(split, None)

        def data_key(self, split):
            st = self.path.stat()
            return f"standin-{self.path}-{st.st_size}-{st.st_mtime_ns}"

    return StandIn, StandInConfig


def register_standin():
    from ddcore.plugins import get_host

    StandIn, StandInConfig = standin_source()
    host = get_host()
    if "standin" not in host.registry.names("data"):
        host.registry.bind("data", "bench", "bench").add("standin", StandIn, config=StandInConfig)
    return host


def recipe(path: Path, placement: str, real_batch: int, width: int) -> dict:
    return {
        "name": "bench-data-scale", "plugins": ["ddcore-dm"], "seed": 0, "device": "cpu",
        "data": {"name": "standin", "path": str(path), "store": placement},
        "real": {"sampling": "per_class", "batch": real_batch},
        "backbone": {"name": "ConvNet", "depth": 4, "width": width},
        "synset": {"name": "pixels", "ipc": 1, "init": "real"},
        "sampler": {"name": "random_init", "every": 1, "train_mode": True, "frozen": True},
        "augment": [{"name": "dsa", "strategy": "color_crop_cutout_flip_scale_rotate"}],
        "objective": [{"name": "dm", "weight": 1.0}],
        "optimizer": {"name": "sgd", "lr": 1.0, "momentum": 0.5},
        "run": {"iterations": 1000, "progress": False, "compile": "off", "checkpoint_every": 0},
    }


def write_standin(root: Path, size: int) -> Path:
    path = root / f"standin-{size}.u8"
    if path.is_file() and path.stat().st_size == size * ROW:
        return path
    rng = np.random.default_rng(size)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        for start in range(0, size, 8192):
            fh.write(rng.integers(0, 256, (min(8192, size - start)) * ROW, dtype=np.uint8).tobytes())
    os.replace(tmp, path)
    return path


# -- child: one placement x one size ------------------------------------------------------------------------

def status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> None:
    import torch

    from ddcore.engine import Run
    from ddcore.recipe import parse_recipe

    torch.set_num_threads(args.threads)
    host = register_standin()
    parsed = parse_recipe(recipe(Path(args.path), args.placement, args.real_batch, args.width))
    run = Run(parsed, host=host, out_dir=None, device="cpu", progress=False, log=lambda *_: None)
    t = time.perf_counter()
    run.build()
    build_s = time.perf_counter() - t
    train = run.build_ctx.train
    assert train.placement == args.placement, train.placement
    draws = []
    for i in range(args.draws):
        t = time.perf_counter()
        run._real_batch(i)
        draws.append(time.perf_counter() - t)
    steps = []
    for i in range(args.steps + 1):
        t = time.perf_counter()
        loss, _ = run.step(i)
        float(loss)
        steps.append(time.perf_counter() - t)
    print(json.dumps({
        "placement": args.placement, "size": len(train), "build_s": build_s,
        "sample_ms": 1000 * statistics.median(draws), "step_s": statistics.median(steps[1:]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "anon_mb": status_mb("RssAnon"), "file_mb": status_mb("RssFile"),
    }))


def available_bytes() -> int:
    from ddcore.data.placement import available_ram

    return available_ram()


def steps(args) -> None:
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    os.environ["DDCORE_CACHE"] = str(root / "cache")
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for size in sizes:
        t = time.perf_counter()
        path = write_standin(root, size)
        print(f"# stand-in {size} images ({size * ROW / 1e9:.2f} GB) ready in {time.perf_counter() - t:.0f} s",
              flush=True)
        # the mmap store file, built once (as the first run on a host would), timed apart from the runs
        from ddcore.data.placement import open_split

        StandIn, StandInConfig = standin_source()
        source = StandIn(StandInConfig(path=str(path)))
        t = time.perf_counter()
        open_split(source, "train", source.info(), __import__("torch").device("cpu"), "mmap")
        store_build_s = time.perf_counter() - t
        print(f"# mmap store file built in {store_build_s:.0f} s", flush=True)
        for placement in args.placements.split(","):
            need = 3 * size * ROW
            if placement != "mmap" and need > args.ram_fraction * available_bytes():
                row = {"placement": placement, "size": size, "skipped": (
                    f"not run: the load holds up to 3 copies ({need / 1e9:.1f} GB) of "
                    f"{available_bytes() / 1e9:.1f} GB available")}
                print(json.dumps(row), flush=True)
                rows.append(row)
                continue
            cmd = [sys.executable, __file__, "--root", str(root), "child", "--path", str(path),
                   "--placement", placement, "--real-batch", str(args.real_batch), "--steps", str(args.steps),
                   "--width", str(args.width),
                   "--draws", str(args.draws), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if proc.returncode != 0:
                row = {"placement": placement, "size": size, "skipped": f"child failed: {proc.stderr[-500:]}"}
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                row["store_build_s"] = store_build_s if placement == "mmap" else None
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


# -- decode throughput ----------------------------------------------------------------------------------------

def write_jpeg_folder(root: Path, images: int) -> Path:
    from PIL import Image

    folder = root / "jpeg-folder"
    marker = folder / f".complete-{images}"
    if marker.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    per_class = images // CLASSES
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    for c in range(CLASSES):
        sub = folder / "train" / f"n{c:08d}" / "images"
        sub.mkdir(parents=True)
        for i in range(per_class):
            a = rng.uniform(0, 255, (3, 3))
            field = a[:, 0, None, None] + a[:, 1, None, None] * xx + a[:, 2, None, None] * yy
            noise = rng.normal(0, 12, (3, SIDE, SIDE))
            pixels = np.clip(field + noise, 0, 255).astype(np.uint8).transpose(1, 2, 0)
            Image.fromarray(pixels).save(sub / f"n{c:08d}_{i}.JPEG", quality=90)
    (folder / "test").mkdir()
    marker.touch()
    return folder


def decode(args) -> None:
    from ddcore.data._decode import default_workers
    from ddcore.data.imagefolder import ImageFolderConfig, ImageFolderSource

    root = Path(args.root)
    t = time.perf_counter()
    folder = write_jpeg_folder(root, args.images)
    print(f"# {args.images} JPEGs under {folder} ({time.perf_counter() - t:.0f} s)", flush=True)
    everything = default_workers()
    rates: dict[int, list[float]] = {1: [], everything: []}
    for r in range(args.repeats):
        for workers in rates:
            cache = root / f"decode-cache-{workers}"
            shutil.rmtree(cache, ignore_errors=True)
            os.environ["DDCORE_CACHE"] = str(cache)
            source = ImageFolderSource(ImageFolderConfig(root=str(folder), decode_workers=workers), None)
            source.file_list("train")  # listing the files is not decoding
            t = time.perf_counter()
            images = source.read_all("train")
            seconds = time.perf_counter() - t
            assert images.shape == (args.images, SIDE, SIDE, 3)
            rates[workers].append(args.images / seconds)
            print(json.dumps({"workers": workers, "repeat": r, "seconds": seconds,
                              "images_per_s": args.images / seconds}), flush=True)
            shutil.rmtree(cache, ignore_errors=True)
    for workers, values in rates.items():
        print(f"decode workers={workers}: median {statistics.median(values):.0f} images/s over {len(values)}")


def clean(args) -> None:
    shutil.rmtree(args.root, ignore_errors=True)
    print(f"removed {args.root}")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="folder for the generated data (deleted by 'clean')")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("decode")
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=2)
    p = sub.add_parser("steps")
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--placements", default="device,host,mmap")
    p.add_argument("--real-batch", type=int, default=2)
    p.add_argument("--width", type=int, default=128, help="ConvNet width (the official 128; less on a small CPU)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ram-fraction", type=float, default=0.5)
    p.add_argument("--json", default="")
    p = sub.add_parser("child")
    p.add_argument("--path", required=True)
    p.add_argument("--placement", required=True)
    p.add_argument("--real-batch", type=int, required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--draws", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    sub.add_parser("clean")
    args = parser.parse_args(argv)
    {"decode": decode, "steps": steps, "child": child, "clean": clean}[args.what](args)


if __name__ == "__main__":
    main()
