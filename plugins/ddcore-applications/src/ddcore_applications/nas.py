"""Evaluator ``nas_proxy``: a distilled set as the proxy training set of a neural architecture search.

Protocol (DM §3.6 / Table 5, following DC's search space): every ConvNet of a declared search space (depth ×
width × activation × normalisation × pooling; DC/DM: 4 × 4 × 3 × 5 × 3 = 720 networks) is trained from scratch
on the *proxy* set (the evaluated set; the engine also evaluates the same-budget ``random`` real baseline
through this evaluator) and on a larger *reference* set (the whole training split, or a stated class-balanced
random subset of it where that is too costly, e.g. on a CPU), then tested on a class-balanced subset of the
test split. Reported: Spearman's rank correlation between proxy and reference accuracies over the whole
space (``spearman``; also the result's ``mean``, 0 when undefined because one side ranks every architecture
equal, ``spearman`` then being null) and over the ``top_fraction`` of architectures the proxy
ranks best (``spearman_top``; DM: top 5 %), and the architecture the proxy picks with its reference accuracy
(DM Table 5's "Performance") beside the best reference architecture.

Reference trainings do not depend on the proxy: they are computed once per evaluation seed and reused for
the baselines. Units (``("proxy" | "reference", architecture index, model index)``) are independent and go
through the engine's sharded evaluation like ``train_from_scratch``'s.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Optional, Sequence

import attrs
import numpy as np
import torch

from ddcore.components import Evaluator
from ddcore.config import ComponentRef, non_negative, option, positive
from ddcore.errors import RecipeError, UserError
from ddcore.evaluation.train import balanced_subset_indices, train_classifier
from ddcore.models.layers import ACTIVATIONS, NORMS, POOLINGS
from ddcore.types import SynBatch
from ddcore_applications.common import masked_accuracy, mean_std, run_units, spearman

APPLICATION = "nas_proxy"


def _subset_of(allowed: tuple):
    def check(instance, attribute, value):
        from ddcore.config import OptionValueError

        if not value:
            raise OptionValueError(attribute.name, "expected at least one value")
        bad = [v for v in value if v not in allowed]
        if bad:
            raise OptionValueError(attribute.name, f"expected values among {', '.join(map(repr, allowed))}, "
                                                   f"got {bad[0]!r}")
    return check


def _positive_ints(instance, attribute, value):
    from ddcore.config import OptionValueError

    if not value or any(v <= 0 for v in value):
        raise OptionValueError(attribute.name, f"expected a non-empty list of positive integers, got {value!r}")


@attrs.define(frozen=True, kw_only=True)
class NasProxyConfig:
    """Options of the ``nas_proxy`` evaluator (defaults: DM §3.6's 720-ConvNet space and schedules)."""

    depth: list[int] = option(attrs.NOTHING, "Conv blocks (DC/DM space: 1, 2, 3, 4).",
                              factory=lambda: [1, 2, 3, 4], validator=_positive_ints)
    width: list[int] = option(attrs.NOTHING, "Channels (DC/DM space: 32, 64, 128, 256).",
                              factory=lambda: [32, 64, 128, 256], validator=_positive_ints)
    act: list[str] = option(attrs.NOTHING, "Activations (DC/DM space: sigmoid, relu, leakyrelu).",
                            factory=lambda: ["sigmoid", "relu", "leakyrelu"], validator=_subset_of(ACTIVATIONS))
    norm: list[str] = option(attrs.NOTHING, "Normalisations (DC/DM space: none, batchnorm, layernorm, instancenorm, "
                                            "groupnorm).",
                             factory=lambda: ["none", "batchnorm", "layernorm", "instancenorm", "groupnorm"],
                             validator=_subset_of(NORMS))
    pooling: list[str] = option(attrs.NOTHING, "Poolings (DC/DM space: none, maxpooling, avgpooling).",
                                factory=lambda: ["none", "maxpooling", "avgpooling"], validator=_subset_of(POOLINGS))
    sample: int = option(0, "Evaluate a seeded random sample of this many architectures of the space (0 = all).",
                         validator=non_negative)
    num_models: int = option(1, "Networks trained per architecture and set (accuracies are averaged).",
                             validator=positive)
    epochs: int = option(200, "Proxy training epochs (DM: 200); epochs + 1 are run, lr x0.1 at half.",
                         validator=non_negative)
    reference_epochs: int = option(100, "Reference training epochs (DM: 100 on the whole training set).",
                                   validator=non_negative)
    reference_per_class: int = option(0, "Reference set: 0 = the whole training split, else this many random "
                                         "training images per class (seeded; state it when reporting).",
                                      validator=non_negative)
    lr: float = option(0.01, "SGD learning rate (proxy and reference).")
    momentum: float = option(0.9, "SGD momentum.")
    weight_decay: float = option(5e-4, "SGD weight decay.")
    batch_size: int = option(256, "Training batch size.", validator=positive)
    augment: bool = option(True, "Augment training batches with the run's siamese augmentations (random mode).")
    test_limit: int = option(0, "Validation images: a class-balanced subset of the test split (0 = all of it).",
                             validator=non_negative)
    top_fraction: float = option(0.05, "Also correlate over this fraction of architectures the proxy ranks best "
                                       "(DM Table 5: top 5 %); reported when it holds at least 3.")
    parallel: str = option("auto", "'threads': networks side by side on CPU threads; 'off': one after another; "
                                    "'auto': threads on a CPU, off elsewhere.", choices=("auto", "threads", "off"))
    max_parallel: int = option(0, "Most networks trained at once with threads (0 = as many as threads).",
                               validator=non_negative)
    baselines: list[str] = option(attrs.NOTHING, "Same-budget proxies the engine also evaluates (DM: random).",
                                  factory=lambda: ["random"])


def search_space(cfg: NasProxyConfig) -> list[dict[str, Any]]:
    """Every ConvNet option set of the declared space, in a fixed order (depth, width, act, norm, pooling)."""
    return [dict(depth=d, width=w, act=a, norm=n, pooling=p)
            for d, w, a, n, p in itertools.product(cfg.depth, cfg.width, cfg.act, cfg.norm, cfg.pooling)]


def arch_name(arch: dict[str, Any]) -> str:
    return f"ConvNet-d{arch['depth']}-w{arch['width']}-{arch['act']}-{arch['norm']}-{arch['pooling']}"


class NasProxy(Evaluator):
    """Rank a ConvNet search space by training on the evaluated set; compare with reference training."""

    def __init__(self, config: NasProxyConfig, build):
        super().__init__(config, build)
        if not 0 < config.top_fraction <= 1:
            raise RecipeError(f"expected a fraction in (0, 1], got {config.top_fraction!r}", key="eval.top_fraction")
        build.registry.get("backbone", "ConvNet", key="eval")
        space = search_space(config)
        if config.sample and config.sample < len(space):
            picked = torch.randperm(len(space), generator=build.generator("nas_proxy", "sample"))[:config.sample]
            space = [space[i] for i in sorted(picked.tolist())]
        self.architectures = space
        self._parallel = config.parallel
        if self._parallel == "auto":
            self._parallel = "threads" if build.device.type == "cpu" else "off"
        self._reference_set: Optional[SynBatch] = None
        self._reference_cache: dict[tuple[int, int, int], float] = {}

    def reference_set(self) -> SynBatch:
        """The reference training set: the whole training split or a seeded class-balanced random subset."""
        if self._reference_set is None:
            data = self.build.train
            per_class = self.config.reference_per_class
            if per_class:
                counts = [min(per_class, int(c)) for c in data.class_counts]
                indices = data.random_indices_per_class(counts, self.build.generator("nas_proxy", "reference"))
            else:
                indices = torch.arange(len(data), device=data.labels.device)
            batch = data.take(indices)
            self._reference_set = SynBatch(batch.images, batch.labels)
        return self._reference_set

    def _job(self, train_set: SynBatch, kind: str, arch_index: int, index: int, seed: int, progress):
        cfg, build = self.config, self.build
        ref = ComponentRef("ConvNet", self.architectures[arch_index])
        # proxy and reference networks of one architecture start from the same weights
        net = build.make_backbone(ref, seed_key=(seed, APPLICATION, arch_index, index))
        generator = build.generator("eval", APPLICATION, kind, seed, arch_index, index)
        augment = None
        if cfg.augment and build.siamese_augmentations:
            augment = functools.partial(build.augment_random, generator=generator)
        labels = train_set.labels
        loss = "ce" if labels.dtype == torch.int64 and labels.ndim == 1 else "soft_ce"
        epochs = cfg.epochs if kind == "proxy" else cfg.reference_epochs
        test = build.test
        subset = balanced_subset_indices(test.class_counts, cfg.test_limit)
        indices = torch.arange(len(test), device=test.labels.device) if subset is None else subset.to(test.labels.device)

        def train_and_test() -> float:
            train_classifier(net, train_set.images, labels, epochs=epochs, lr=cfg.lr, momentum=cfg.momentum,
                             weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, augment=augment,
                             generator=generator, loss=loss)
            acc = 100.0 * masked_accuracy(net, test, indices)
            progress.advance()
            return acc

        return train_and_test

    # -- sharded evaluation ---------------------------------------------------------------------------
    def units(self) -> list[tuple[str, int, int]]:
        """``(kind, architecture index, model index)`` for the proxy and the reference trainings."""
        n, m = len(self.architectures), self.config.num_models
        return [(kind, a, i) for kind in ("proxy", "reference") for a in range(n) for i in range(m)]

    def evaluate_units(self, synset: SynBatch, *, seed: int, units: Sequence[tuple[str, int, int]]) -> list[float]:
        synset = synset.detach().to(self.build.device)
        if synset.labels is None:
            raise UserError("eval 'nas_proxy': the set has no labels (networks are trained to classify)")
        todo = [(k, int(a), int(i)) for k, a, i in units
                if k == "proxy" or (int(a), int(i), seed) not in self._reference_cache]
        with self.build.progress_task("nas_proxy", len(todo), unit="networks") as progress:
            def prepare(unit):
                kind, a, i = unit
                train_set = synset if kind == "proxy" else self.reference_set()
                return self._job(train_set, kind, a, i, seed, progress)

            values = dict(zip(todo, run_units(todo, prepare, self.build.device, self._parallel,
                                              self.config.max_parallel)))
        out = []
        for k, a, i in units:
            key = (k, int(a), int(i))
            if k == "reference":
                if key in values:
                    self._reference_cache[(key[1], key[2], seed)] = values[key]
                out.append(self._reference_cache[(key[1], key[2], seed)])
            else:
                out.append(values[key])
        return out

    def summarize(self, synset: SynBatch, results: Sequence[tuple[tuple[str, int, int], float]]) -> dict[str, Any]:
        n, m = len(self.architectures), self.config.num_models
        proxy = np.full((n, m), np.nan)
        reference = np.full((n, m), np.nan)
        for (kind, a, i), v in results:
            (proxy if kind == "proxy" else reference)[int(a), int(i)] = v
        proxy_mean, reference_mean = proxy.mean(1), reference.mean(1)
        rho = spearman(proxy_mean, reference_mean)
        # spread of the correlation over independently seeded proxy networks
        per_seed = [spearman(proxy[:, i], reference_mean) for i in range(m)]
        per_seed = [r for r in per_seed if r is not None]
        order = np.argsort(-proxy_mean, kind="stable")
        top = order[:max(1, int(round(self.config.top_fraction * n)))]
        rho_top = spearman(proxy_mean[top], reference_mean[top]) if len(top) >= 3 else None
        picked, best = int(order[0]), int(np.argmax(reference_mean))
        archs = [{"arch": arch_name(a), "options": a, "proxy": float(p), "reference": float(r)}
                 for a, p, r in zip(self.architectures, proxy_mean, reference_mean)]
        return {
            "metric": "spearman", "application": APPLICATION,
            # a ranking with every architecture tied carries no rank information: 0, with spearman null
            "mean": 0.0 if rho is None else rho,
            "std": float(np.std(per_seed)) if len(per_seed) > 1 else 0.0,
            "num_models": n,
            "spearman": rho, "spearman_top": rho_top, "top_architectures": len(top),
            "picked": {**archs[picked], "rank_by_reference": int((reference_mean > reference_mean[picked]).sum()) + 1},
            "best_reference": archs[best],
            "per_model": {"proxy": mean_std(proxy.flatten().tolist()),
                          "reference": mean_std(reference.flatten().tolist())},
            "reference_set": {"images": len(self.reference_set()), "epochs": self.config.reference_epochs,
                              "per_class": self.config.reference_per_class or "all"},
            "architectures": archs,
        }

    def evaluate(self, synset: SynBatch, *, seed: int) -> dict[str, Any]:
        """Rank correlation of proxy vs reference accuracy over the space, and the architecture the proxy picks."""
        units = self.units()
        values = self.evaluate_units(synset, seed=seed, units=units)
        return self.summarize(synset, list(zip(units, values)))
