"""Layer profile: transferability of every block's pooled features, and how far each layer
moved from its random-init twin (debiased linear CKA: about 0 when a layer is no closer to
its twin than independent noise, whatever its width).

Features come from one pass over the model's layers (through the feature cache) on the
training part of the fine-tuning split only (the same seeded 60/20/20 split as
:func:`transferscope.finetune.finetune`), so recommendations never see test data.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from transferscope.backends import FinetunableBackend, create_backend
from transferscope.backends.simple import random_twin
from transferscope.data import Dataset, training_part
from transferscope.errors import ConstantFeaturesError, InputError
from transferscope.features import FeatureCache, extract_features, extract_source_probs
from transferscope.layers.cka import linear_cka
from transferscope.metrics import feature_metrics, get_metric, model_metrics, score
from transferscope.progress import unit
from transferscope.rank import primary_metric
from transferscope.scoring import PROFILE_METRICS


@dataclass
class ProfileConfig:
    """Options of :func:`layer_profile`.

    Attributes
    ----------
    metrics : tuple of str
        Feature metrics computed at every layer; source-head metrics (``leep``, ``nce``) are
        computed once, on the model's classifier head and its twin's (``LayerProfile.head``).
    primary : str, optional
        Also scored on the random twin (the pretrained margin) and used for the cut
        (default: linear_probe when among ``metrics``, else the first).
    layers : tuple of str, optional
        Default: every layer the backend exposes.
    split_seed, seed : int
        Seeds of the split (the profile sees its training part) and of the metrics.
    batch_size, device, cache_dir
        Feature extraction settings.
    num_workers : int
        ``DataLoader`` processes that read and prepare batches during extraction (0: this
        process).
    precision : str
        ``"auto"`` (fp32 on the CPU, bf16 or fp16 on CUDA), ``"fp32"``, ``"bf16"`` or
        ``"fp16"`` (CUDA only) for extraction; see :mod:`transferscope.precision`.
    """

    metrics: tuple = PROFILE_METRICS
    primary: str | None = None
    layers: tuple | None = None
    split_seed: int = 0
    seed: int = 0
    batch_size: int = 64
    device: str | None = None
    cache_dir: str | None = None
    num_workers: int = 0
    precision: str = "auto"

    head_metrics: tuple = ()

    def __post_init__(self):
        from transferscope.data.stream import check_workers
        from transferscope.precision import check_precision

        check_precision(self.precision)
        check_workers(self.num_workers)
        features, source = model_metrics(self.metrics, "the layer profile")
        if not features:
            raise InputError("Expected at least one feature metric for the layer profile (it "
                             "scores every layer's features), got only source-head metrics "
                             f"{source}; add one, e.g. --metric linear_probe,leep")
        self.metrics = feature_metrics(features, "the layer profile")
        self.head_metrics = tuple(dict.fromkeys((*self.head_metrics, *source)))
        self.primary = primary_metric(self.metrics, self.primary)


@dataclass
class LayerProfile:
    """Per-layer rows (input to output) of a model on a target; see :func:`layer_profile`."""

    model: str
    data: str
    n_samples: int
    n_classes: int
    metrics: tuple
    primary: str
    rows: list[dict] = field(default_factory=list)  # one per layer, input to output
    #: source-head metrics of the model and its random twin (``random_<metric>``), or
    #: ``{"note": ...}`` when the model has no classifier head; empty when none was asked for
    head: dict = field(default_factory=dict)

    def column(self, name: str) -> np.ndarray:
        """One value per layer, shape (n_layers,)."""
        return np.array([r[name] for r in self.rows], dtype=float)

    def to_dict(self) -> dict:
        """A JSON-able dict."""
        return asdict(self)


def _consensus(rows, metrics) -> None:
    """``score``: each metric min-max normalised over the layers, then averaged (1 = the best
    layer on every metric)."""
    parts = []
    for m in metrics:
        v = np.array([r[m] for r in rows], dtype=float)
        span = np.nanmax(v) - np.nanmin(v)
        parts.append(np.zeros_like(v) if span == 0 else (v - np.nanmin(v)) / span)
    for r, s in zip(rows, np.nanmean(parts, axis=0), strict=True):
        r["score"] = float(s)


def _score(metric, features, labels, seed) -> float:
    """The metric's value, or NaN where the layer carries no information (every feature
    constant, e.g. a random twin's dead layer): such a layer is never recommended."""
    seeded = {"seed": seed} if "seed" in get_metric(metric).options else {}
    try:
        return float(score(metric, features, labels, **seeded))
    except ConstantFeaturesError:
        return float("nan")


def layer_profile(data: Dataset, model, config: ProfileConfig | None = None,
                  **kw) -> LayerProfile:
    """Transferability of every layer, and its distance from the random-init twin.

    Parameters
    ----------
    data : Dataset
        The target; only the training part of its split is looked at.
    model : str or Backend
        The model.
    config : ProfileConfig, optional
        Options; or pass them as keywords.

    Returns
    -------
    LayerProfile
        Per layer: ``layer``, ``index``, ``dim``, each metric, ``random_<primary>``,
        ``margin``, ``cka_random``, ``seconds``, and the consensus ``score``.
    """
    cfg = config or ProfileConfig(**kw)
    backend = create_backend(model) if isinstance(model, str) else model
    if not isinstance(backend, FinetunableBackend):
        raise InputError(f"Expected a model with weights for a layer profile (its layers are "
                         f"compared with its random-init twin's), got {backend.name!r}; "
                         "profile an effnet-lite, hf:, torch:, timm: or torchvision: model")
    backend.check_input(data)
    layers = list(cfg.layers or backend.layers())
    backend.check_layers(layers)
    part = training_part(data, cfg.split_seed)
    labels = part.labels
    cache = FeatureCache(cfg.cache_dir)
    opts = {"batch_size": cfg.batch_size, "device": cfg.device, "cache": cache,
            "num_workers": cfg.num_workers, "precision": cfg.precision}
    feats = extract_features(backend, part, layers, **opts)
    twin = extract_features(random_twin(backend), part, layers, **opts)
    rows = []
    with unit(f"layer profile of {backend.name}", len(layers), "layer") as bar:
        for i, layer in enumerate(layers):
            start = time.perf_counter()
            f = feats[layer]
            row = {"layer": layer, "index": i, "dim": int(f.shape[1])}
            with unit(f"metrics of {layer}", len(cfg.metrics) + 1, "metric",
                      transient=True) as metrics:
                for m in cfg.metrics:
                    row[m] = _score(m, f, labels, cfg.seed)
                    metrics.update(metric=m)
                row[f"random_{cfg.primary}"] = _score(cfg.primary, twin[layer], labels,
                                                      cfg.seed)
                metrics.update(metric=f"random_{cfg.primary}")
            row["margin"] = row[cfg.primary] - row[f"random_{cfg.primary}"]
            row["cka_random"] = linear_cka(f, twin[layer])
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            bar.update(layer=layer)
    _consensus(rows, cfg.metrics)
    return LayerProfile(model=backend.name, data=data.name, n_samples=len(part),
                        n_classes=len(np.unique(labels)), metrics=cfg.metrics,
                        primary=cfg.primary, rows=rows,
                        head=_head_scores(backend, part, cfg, opts))


def _head_scores(backend, part: Dataset, cfg: ProfileConfig, opts: dict) -> dict:
    """Source-head metrics (LEEP, NCE) of the model and of its random twin's head, on the
    training part; a note instead for a model without a classifier head."""
    if not cfg.head_metrics:
        return {}
    probs = extract_source_probs(backend, part, **opts)
    if probs is None:
        return {"note": f"{', '.join(cfg.head_metrics)}: {backend.name!r} has no classifier "
                        "head (no source probabilities); not scored"}
    twin = extract_source_probs(random_twin(backend), part, **opts)
    out = {}
    for m in cfg.head_metrics:
        out[m] = float(score(m, source_probs=probs, labels=part.labels))
        out[f"random_{m}"] = float(score(m, source_probs=twin, labels=part.labels))
    return out
