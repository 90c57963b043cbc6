"""The self-supervised target model g_φ: train (Barlow Twins) or load it, cache it, and serve its features.

One :class:`Teacher` lives per run: the parameterization creates it (it needs Y_s = g_φ(X_s) at init) and the
objective, the pool-free baselines and the evaluator's KD option reuse it. Every access goes through
:func:`get_teacher` / :func:`current_teacher` / :func:`use_teacher` (other plugins, e.g. the PCA bases of
Boost-SSDD, call them too): the memo key is this module's own object, not a string others must know.

Sources, in order:

1. ``path`` set: a user-supplied file. ``.safetensors`` or a torch state dict (``.pt``/``.pth``/``.ckpt``,
   read with ``torch.load(weights_only=True)``; a top-level ``state_dict`` entry is unwrapped). Expected keys are
   torchvision ResNet18 names: ``conv1.weight``, ``bn1.{weight,bias,running_mean,running_var}``,
   ``layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}.*`` and ``layer{2,3,4}.0.downsample.{0,1}.*``. Prefixes
   ``backbone.``, ``module.``, ``encoder.`` are stripped; ``fc.*`` and ``projector.*`` are ignored. The stem
   width and input channels are read from ``conv1.weight``; ``stem_padding`` must match how it was trained
   (2 for solo-learn / official KRR-ST teachers).
2. Otherwise a cached teacher ``<build.cache_dir>/ddcore-krr/teacher-<key>.safetensors``, where ``key`` hashes
   every training option, a fingerprint of the training images (shape + bytes) and the normalisation constants,
   so the same settings on the same data reuse the same weights and anything else trains anew.
3. Otherwise Barlow Twins training on the *unlabeled* training split (:mod:`ddcore_krr.barlow`), then caching.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import attrs
import torch
from safetensors.torch import load_file, save_file

from ddcore.config import option
from ddcore.context import derive_seed
from ddcore.errors import RecipeError, UserError

from ddcore_krr.barlow import train_barlow_twins
from ddcore_krr.networks import CifarResNet18

#: The run memo key of the teacher (``build.shared``); private to this module.
_TEACHER_KEY = object()
#: Bump when the training code changes in a way that changes the weights (invalidates cached teachers).
TRAINING_CODE_VERSION = 1


@attrs.define(frozen=True, kw_only=True)
class TeacherConfig:
    """Options of the self-supervised teacher (table ``[synset.teacher]``)."""

    path: str = option("", "Trained teacher weights (.safetensors or state-dict .pt); empty = train Barlow Twins "
                           "(or reuse the cached one with the same settings and data).")
    base_width: int = option(64, "ResNet18 stem width (64 = standard ResNet18, 512-d output; smaller = CPU tests).",
                             validator=attrs.validators.ge(1))
    stem_padding: int = option(2, "Padding of the 3x3 stem conv (2 = solo-learn / official KRR-ST teacher).",
                               validator=attrs.validators.ge(0))
    epochs: int = option(1000, "Barlow Twins epochs (solo-learn CIFAR recipe: 1000).", validator=attrs.validators.ge(1))
    batch_size: int = option(256, "Barlow Twins batch size (solo-learn: 256).", validator=attrs.validators.ge(2))
    lr: float = option(0.3, "Base learning rate for batch 256, scaled by batch/256 (solo-learn LARS: 0.3).")
    optimizer: str = option("lars", "lars (solo-learn) or sgd.", choices=("lars", "sgd"))
    weight_decay: float = option(1e-4, "Weight decay (solo-learn: 1e-4).")
    momentum: float = option(0.9, "Momentum.")
    lars_eta: float = option(0.02, "LARS trust coefficient η (solo-learn: 0.02).")
    warmup_epochs: int = option(10, "Linear warm-up epochs before the cosine decay (solo-learn: 10).",
                                validator=attrs.validators.ge(0))
    projector: tuple[int, ...] = option((2048, 2048, 2048), "Projector widths (solo-learn CIFAR: 2048-2048-2048).")
    lambd: float = option(0.0051, "Weight of the off-diagonal term (solo-learn: 0.0051).")
    scale_loss: float = option(0.1, "Loss scale (solo-learn CIFAR: 0.1).")
    min_scale: float = option(0.08, "RandomResizedCrop minimum area (solo-learn: 0.08).")
    train_limit: int = option(0, "Train on a fixed random subset of N training images (0 = all); quick runs.",
                              validator=attrs.validators.ge(0))
    seed: int = option(0, "Seed of teacher training (independent of the run seed, so runs share a teacher).")
    amp: bool = option(True, "bfloat16 autocast for teacher training on CUDA.")
    cache: bool = option(True, "Reuse / store trained teachers under build.cache_dir.")
    feature_batch: int = option(1024, "Batch size for computing teacher features.", validator=attrs.validators.ge(1))


def _strip_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone.", "encoder.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.startswith(("fc.", "projector.", "classifier.", "head.")) or k.endswith("num_batches_tracked"):
            continue
        out[k] = v
    return out


def _key_list(keys: list[str], what: str, show: int = 4) -> str:
    if not keys:
        return f"no {what} keys"
    more = f", ... ({len(keys) - show} more)" if len(keys) > show else ""
    return f"{len(keys)} {what} key(s) ({', '.join(keys[:show])}{more})"


def load_teacher_file(path: Path, stem_padding: int = 2) -> CifarResNet18:
    """Build a :class:`CifarResNet18` from a user file (see the module docstring for the expected keys)."""
    if not path.is_file():
        raise UserError(f"synset.teacher.path: file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
                state = state["state_dict"]
    except Exception as exc:  # noqa: BLE001 - any reader error is a bad user file
        raise UserError(f"synset.teacher.path: cannot read {path}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"synset.teacher.path: {path} is not a tensor state dict")
    state = _strip_state_dict(state)
    if "conv1.weight" not in state:
        raise UserError(f"synset.teacher.path: {path} has no 'conv1.weight' (expected torchvision ResNet18 keys; "
                        f"found e.g. {sorted(state)[:4]})")
    width, in_ch = int(state["conv1.weight"].shape[0]), int(state["conv1.weight"].shape[1])
    net = CifarResNet18(in_channels=in_ch, base_width=width, stem_padding=stem_padding)
    own = net.state_dict()
    expected = set(k for k in own if not k.endswith("num_batches_tracked"))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise UserError(f"synset.teacher.path: {path} is not a ResNet18 trunk in torchvision / official KRR-ST / "
                        f"ddcore layout: {_key_list(missing, 'missing')}; {_key_list(unexpected, 'unexpected')}")
    wrong = [f"{k} {list(state[k].shape)} (expected {list(own[k].shape)})" for k in sorted(expected)
             if state[k].shape != own[k].shape]
    if wrong:
        raise UserError(f"synset.teacher.path: {path} has {len(wrong)} tensor(s) of the wrong shape for a ResNet18 of "
                        f"width {width}: {', '.join(wrong[:3])}")
    net.load_state_dict(state, strict=False)
    return net


def data_fingerprint(images: torch.Tensor) -> str:
    """blake2b of the images' shape, dtype and bytes (chunked through the host)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tuple(images.shape)}|{images.dtype}".encode())
    flat = images.reshape(images.shape[0], -1)
    for start in range(0, flat.shape[0], 4096):
        h.update(flat[start:start + 4096].contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def teacher_cache_key(config: TeacherConfig, fingerprint: str,
                      normalization: Optional[tuple[Any, Any]] = None) -> str:
    """Hash of every option that changes the trained weights, the data fingerprint and the (mean, std) the
    training normalises with (another normalisation trains another teacher, e.g. ``--set data.std=...``)."""
    fields = attrs.asdict(config)
    for k in ("path", "cache", "feature_batch"):
        fields.pop(k)
    content = {"config": fields, "data": fingerprint, "code": TRAINING_CODE_VERSION}
    if normalization is not None:
        content["normalization"] = [[round(float(v), 8) for v in part] for part in normalization]
    payload = json.dumps(content, sort_keys=True, default=list)
    return hashlib.blake2b(payload.encode(), digest_size=12).hexdigest()


def _atomic_save(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Teacher:
    """A frozen teacher network plus helpers to compute (and cache) its features.

    :ivar net: the trunk, in eval mode, ``requires_grad=False``.
    :ivar dim: output dimension d_y.
    :ivar source: ``"file"``, ``"cache"`` or ``"trained"``.
    """

    def __init__(self, net: torch.nn.Module, *, feature_batch: int = 1024, source: str = "", key: str = ""):
        self.net = net.eval().requires_grad_(False)
        self.dim = int(net.out_dim)
        self.feature_batch = feature_batch
        self.source = source
        self.key = key
        self._table: Optional[torch.Tensor] = None

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, d_y]`` features of normalised ``images`` (batched, no grad, eval-mode BN)."""
        outs = [self.net(images[s:s + self.feature_batch]) for s in range(0, images.shape[0], self.feature_batch)]
        if not outs:
            return images.new_zeros((0, self.dim))
        return torch.cat(outs).float()

    @torch.no_grad()
    def table(self, data: Any) -> torch.Tensor:
        """``[N, d_y]`` features of every image of a store (``ClassIndexedData``), computed once.

        Index it with ``RealBatch.indices`` (store positions) to get a real batch's targets without a forward.
        """
        n = len(data)
        if self._table is None or self._table.shape[0] != n:
            device = data.labels.device
            parts = [self.net(data.take(torch.arange(s, min(s + self.feature_batch, n), device=device)).images)
                     for s in range(0, n, self.feature_batch)]
            self._table = torch.cat(parts).float()
        return self._table


def _resolve(path: str, build: Any) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    recipe_file = getattr(getattr(build, "recipe", None), "file", None)
    if recipe_file:
        candidate = Path(recipe_file).parent / p
        if candidate.exists():
            return candidate
    return p


def build_teacher(config: TeacherConfig, build: Any) -> Teacher:
    """Load, reuse from cache, or train the teacher described by ``config`` (see the module docstring)."""
    device = build.device
    if config.path:
        net = load_teacher_file(_resolve(config.path, build), config.stem_padding)
        return Teacher(net.to(device), feature_batch=config.feature_batch, source="file", key=config.path)
    images = build.train.images  # uint8 [N, C, H, W], class-sorted store; labels are never used
    if 0 < config.train_limit < images.shape[0]:  # a fixed random subset (the store is class-sorted)
        g = torch.Generator().manual_seed(derive_seed("ddcore-krr-teacher-subset", config.seed))
        images = images[torch.randperm(images.shape[0], generator=g)[: config.train_limit].to(images.device)]
    if images.shape[0] < 2:
        raise RecipeError("the teacher needs at least 2 training images", key="synset.teacher")
    key = teacher_cache_key(config, data_fingerprint(images), (build.info.mean, build.info.std))
    path = Path(build.cache_dir) / "ddcore-krr" / f"teacher-{key}.safetensors"
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.manual_seed(derive_seed("ddcore-krr-teacher", config.seed))  # initial weights and training draws
        net = CifarResNet18(in_channels=images.shape[1], base_width=config.base_width,
                            stem_padding=config.stem_padding)
        if config.cache and path.is_file():
            net.load_state_dict(load_file(str(path)))
            build.log(f"[krr teacher] reusing cached teacher {path}")
            return Teacher(net.to(device), feature_batch=config.feature_batch, source="cache", key=key)
        net = net.to(device)
        info = build.info
        progress = build.progress_task("krr teacher", config.epochs, unit="epochs") \
            if hasattr(build, "progress_task") else None
        train_barlow_twins(
            net, images, mean=torch.tensor(info.mean), std=torch.tensor(info.std), epochs=config.epochs,
            batch_size=config.batch_size, lr=config.lr, optimizer=config.optimizer,
            weight_decay=config.weight_decay, momentum=config.momentum, lars_eta=config.lars_eta,
            warmup_epochs=config.warmup_epochs, projector_dims=config.projector, lambd=config.lambd,
            scale_loss=config.scale_loss, min_scale=config.min_scale, amp=config.amp, log=build.log,
            on_epoch_end=None if progress is None else (lambda _: progress.advance()),
        )
        if progress is not None:
            progress.close()
    if config.cache:
        _atomic_save(net.state_dict(), path, {"key": key, "config": json.dumps(attrs.asdict(config), default=list)})
        build.log(f"[krr teacher] cached teacher at {path}")
    return Teacher(net, feature_batch=config.feature_batch, source="trained", key=key)


def get_teacher(build: Any, config: Optional[TeacherConfig] = None) -> Teacher:
    """The run's teacher: built from ``config`` on first call, then the same object (``build.shared``).

    Called without ``config`` it only looks the teacher up and raises a RecipeError if none was built yet.
    """
    teacher = current_teacher(build)
    if teacher is None:
        if config is None:
            raise RecipeError("KRR-ST components need a teacher: use synset name 'krr_pixels' (or a parameterization "
                              "that calls ddcore_krr.teacher.get_teacher(build, config))", key="synset")
        teacher = use_teacher(build, build_teacher(config, build))
    return teacher


def current_teacher(build: Any) -> Optional[Teacher]:
    """The run's teacher if one was built, else ``None`` (never builds one)."""
    return build.shared.get(_TEACHER_KEY)


def use_teacher(build: Any, teacher: Teacher) -> Teacher:
    """Make ``teacher`` the run's teacher (tests and callers holding a pretrained one); returns it."""
    build.shared[_TEACHER_KEY] = teacher
    return teacher
