"""Writing run artefacts safely: atomic files, checkpoints, safetensors synsets, PNG grids.

Every file is written to a temporary sibling and moved into place with ``os.replace``, so an interrupted
run never leaves a half-written checkpoint or synset behind (a kill mid-write leaves a ``.<name>.*.tmp``, removed
by :func:`clean_stale_temporaries` when the run next starts). Loading never unpickles arbitrary objects
(``torch.load(weights_only=True)``, safetensors), and a checkpoint's zip CRCs are verified before it is used.

A run directory is held by one process at a time through :class:`RunLock` (``run.lock``: pid, host and process
start time; a lock whose process is gone is taken over).
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Optional

import torch

from ddcore.errors import UserError
from ddcore.types import DatasetInfo, SynBatch

__all__ = [
    "atomic_write_bytes", "atomic_write_text", "denormalize", "load_checkpoint", "save_checkpoint", "save_grid",
    "save_synset"
]

LOCK_NAME = "run.lock"
#: keys every checkpoint written by :meth:`ddcore.engine.Run.state_dict` holds
CHECKPOINT_KEYS = ("step", "parameterization", "optimizer", "sampler", "objectives", "augmentations", "rng_cpu",
                   "evaluations")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; an OS failure (disk full, read-only) is a one-line error naming it."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artefacts are ordinary files
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {path}: {exc.strerror or exc} (the previous version, if any, is "
                            f"unchanged)") from exc
        raise


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Remove ``.<name>.*.tmp`` files an interrupted :func:`atomic_write_bytes` left in ``folder``."""
    removed = []
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
                p.unlink()
                removed.append(p)
    return removed


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as the strings 'nan', 'inf', '-inf' (strict JSON has no NaN token)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


# -- the run-directory lock -------------------------------------------------------------------------------
def _process_start(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (Linux), which tells a live process from a later one reusing its pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive hold of a run directory for one process (``run.lock``, created with O_EXCL).

    :param what: how the holder is described in errors (``--out``, ``ddcore eval``).
    """

    def __init__(self, folder: Path, what: str = "--out"):
        self.path = Path(folder) / LOCK_NAME
        self.what = what
        self.held = False
        self._me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
                    "since": time.strftime("%Y-%m-%d %H:%M:%S")}

    def _holder(self) -> Optional[dict]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half-written: judged by age below

    def _stale(self, holder: dict) -> bool:
        if not holder:
            try:  # a lock being written right now is seconds old
                return time.time() - self.path.stat().st_mtime > 60
            except OSError:
                return True
        if holder.get("host") != self._me["host"]:
            return False  # another machine's process: cannot be checked from here
        pid = holder.get("pid")
        if not isinstance(pid, int) or not _pid_alive(pid):
            return True
        start = holder.get("start")
        return start is not None and _process_start(pid) not in (None, start)

    def acquire(self) -> "RunLock":
        payload = json.dumps(self._me).encode()
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released between the two calls
                if self._stale(holder):
                    try:  # the rename is atomic: of two processes seeing the same stale lock, one removes it
                        os.rename(self.path, self.path.with_name(f".{LOCK_NAME}.{os.getpid()}.stale"))
                        os.unlink(self.path.with_name(f".{LOCK_NAME}.{os.getpid()}.stale"))
                    except FileNotFoundError:
                        pass
                    continue
                raise UserError(
                    f"{self.what} {self.path.parent}: in use by another ddcore process (pid {holder.get('pid', '?')} "
                    f"on {holder.get('host', '?')} since {holder.get('since', '?')}; {self.path}); if that process "
                    f"is gone (another machine), delete {self.path}") from None
            except OSError as exc:
                raise UserError(f"{self.what} {self.path.parent}: cannot write there "
                                f"({exc.strerror or exc})") from exc
            try:
                os.write(fd, payload)
            finally:
                os.close(fd)
            self.held = True
            return self
        raise UserError(f"{self.what} {self.path.parent}: could not take {self.path} (other processes keep "
                        f"claiming it)")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = self._holder()
        if holder and holder.get("pid") == self._me["pid"] and holder.get("host") == self._me["host"]:
            try:
                self.path.unlink()
            except OSError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(_to_cpu(state), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU after checking it is whole: a zip whose every CRC matches, with every key.

    Any damage is a :class:`~ddcore.errors.UserError` naming the file (never a silent load of garbage).
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a checkpoint file")
    try:
        size = path.stat().st_size
        if size == 0:
            raise UserError(f"{path}: checkpoint is empty (0 bytes)")
        if not zipfile.is_zipfile(path):
            raise UserError(f"{path}: not a ddcore checkpoint (not a zip archive: truncated or another format)")
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()  # reads every member and checks its CRC-32
        if bad is not None:
            raise UserError(f"{path}: checkpoint is damaged (CRC mismatch in {bad!r})")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/pickle/OS failures of a damaged file
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: cannot read checkpoint ({reason})") from exc
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a ddcore checkpoint (holds a {type(state).__name__})")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise UserError(f"{path}: checkpoint lacks key(s) {', '.join(missing)}")
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise UserError(f"{path}: checkpoint step is {step!r}, expected an integer >= 0")
    return state


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    state = read_checkpoint(path)

    def move(obj):
        if isinstance(obj, torch.Tensor):
            # RNG states must stay CPU ByteTensors.
            return obj if obj.dtype == torch.uint8 else obj.to(device)
        if isinstance(obj, dict):
            return {k: move(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [move(v) for v in obj]
        return obj

    return move(state)


def save_synset(path: Path, params: dict[str, torch.Tensor], syn: SynBatch) -> None:
    """``param/<name>`` tensors (what ``load_state_dict`` needs) plus the materialised images/labels/targets."""
    from safetensors.torch import save

    tensors = {f"param/{k}": v.detach().cpu().contiguous().clone() for k, v in params.items()}
    tensors["images"] = syn.images.detach().cpu().contiguous().clone()
    if syn.labels is not None:
        tensors["labels"] = syn.labels.detach().cpu().contiguous().clone()
    if syn.targets is not None:
        tensors["targets"] = syn.targets.detach().cpu().contiguous().clone()
    atomic_write_bytes(path, save(tensors))


def denormalize(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    mean = torch.tensor(info.mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=images.device).view(1, -1, 1, 1)
    return (images * std + mean).clamp(0, 1)


def save_grid(path: Path, syn: SynBatch, info: DatasetInfo, max_per_class: int = 10, max_images: int = 400) -> None:
    """A PNG grid: one row per class (at most ``max_per_class`` each) when labels are class-major."""
    from torchvision.utils import make_grid
    from PIL import Image

    images = syn.images.detach().float().cpu()
    if images.ndim != 4 or images.shape[1] != info.channels:
        return
    nrow = 10
    labels = syn.labels
    if labels is not None and labels.ndim == 1 and len(labels):
        counts = torch.bincount(labels.cpu(), minlength=info.num_classes)
        per_class = int(counts.max())
        take = min(per_class, max_per_class)
        order = torch.argsort(labels.cpu(), stable=True)
        rows = []
        start = 0
        for c in range(info.num_classes):  # host-side, once per run: not in the loop
            n = int(counts[c])
            rows.append(order[start:start + min(n, take)])
            start += n
        idx = torch.cat(rows)
        images, nrow = images[idx], take
    images = denormalize(images[:max_images], info)
    if info.channels == 1:
        images = images.repeat(1, 3, 1, 1)
    scale = max(1, 32 // max(info.height, 1))
    if scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    grid = make_grid(images, nrow=max(nrow, 1), padding=2, pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
