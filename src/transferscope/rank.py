"""Rank candidate pretrained models on a target dataset, with a negative-transfer risk label.

For every candidate: features are extracted (cached), each metric is computed on the full
target set and on ``subsamples`` seeded, stratified subsamples of a fraction r = 0.8 (the same
subsamples for every model, so differences are paired). Intervals are subsampling intervals for
the full-data value: theta_full + sqrt(r / (1 - r)) * percentiles(theta_sub - mean(theta_sub)),
since Var(theta_sub) - Var(theta_full) ~ sigma^2 (1/m - 1/n) while Var(theta_full) ~ sigma^2 / n;
centring on the subsample mean removes the drift of metrics that depend on N, such as LogME.
Every architecture's random-init twin (``random:<model>``)
and the no-model ``raw`` baseline are scored the same way. The risk label compares the candidate
with both baselines on the primary metric:

- LIKELY-POSITIVE: the 95 % interval of (model - random twin) and of (model - raw) both lie > 0
  (with a source-head primary metric such as LEEP, raw has no head: the twin alone decides);
- LIKELY-NEGATIVE: either interval lies < 0 (a baseline does better);
- RISK: anything else (the evidence does not separate them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from transferscope.data import Dataset, subsample
from transferscope.errors import InputError
from transferscope.metrics import get_metric, model_metrics
from transferscope.metrics.sampling import stratified_subsample
from transferscope.metrics.width import DEFAULT_WIDTH, check_width, equalize_width
from transferscope.names import parse_model_name
from transferscope.progress import unit
from transferscope.scoring import DEFAULT_METRICS
from transferscope.verdict import interval_label

RULE = ("risk rule on {primary}: LIKELY-POSITIVE if the 95% subsampling intervals of "
        "(model - random twin) and (model - raw) are both above 0; LIKELY-NEGATIVE if either "
        "is below 0; RISK otherwise")


def primary_metric(metrics, primary: str | None = None) -> str:
    """The metric that decides risk labels and cuts: ``primary``, or ``linear_probe`` when it
    is among ``metrics``, else the first one."""
    if primary is None:
        primary = "linear_probe" if "linear_probe" in metrics else metrics[0]
    if primary not in metrics:
        raise InputError(f"Expected primary among {tuple(metrics)}, got {primary!r}")
    return primary


@dataclass
class RankConfig:
    """Options of :func:`rank`; validated at construction.

    Attributes
    ----------
    metrics : tuple of str
        Metrics to compute: feature metrics on each model's layer, and source-head metrics
        (``leep``, ``nce``) on the source model's class probabilities, for models with a
        classifier head (the others get NaN and a note).
    primary : str, optional
        The metric for the risk label and P(first) (default: linear_probe, or the first).
    per_class, fraction : optional
        Seeded subsampling of the target first.
    subsamples : int
        Seeded stratified subsamples behind each interval (0: no intervals).
    subsample_ratio : float
        Size of each subsample, as a fraction of the target.
    seed : int
        Seed of the subsampling.
    baselines : bool
        Score each model's random-init twin and the raw input too.
    layer : str, optional
        Layer of every model (default: each one's penultimate layer; raw: its input).
    batch_size, device, cache_dir
        Feature extraction settings.
    num_workers : int
        ``DataLoader`` processes that read and prepare batches during extraction (0: this
        process).
    precision : str
        ``"auto"`` (fp32 on the CPU, bf16 or fp16 on CUDA), ``"fp32"``, ``"bf16"`` or
        ``"fp16"`` (CUDA only) for extraction; see :mod:`transferscope.precision`.
    metric_options : dict
        Options passed to the metrics that accept them.
    width : str
        The same transform of every model's features before scoring, so that scores do not
        reward feature width: ``"none"``, ``"pca:K"`` (``"pca"``: K = 32) or
        ``"standardize"`` (:mod:`transferscope.metrics.width`); default ``"pca:32"``, which
        ranked best on the project's benchmark.
    """

    metrics: tuple = DEFAULT_METRICS
    primary: str | None = None
    per_class: int | None = None
    fraction: float | None = None
    subsamples: int = 20
    subsample_ratio: float = 0.8
    seed: int = 0
    baselines: bool = True
    layer: str | None = None
    batch_size: int = 64
    device: str | None = None
    cache_dir: str | None = None
    num_workers: int = 0
    precision: str = "auto"
    metric_options: dict = field(default_factory=dict)
    width: str = DEFAULT_WIDTH

    def __post_init__(self):
        from transferscope.data.stream import check_workers
        from transferscope.precision import check_precision

        self.metrics = tuple(self.metrics)
        model_metrics(self.metrics, "rank")
        check_precision(self.precision)
        check_workers(self.num_workers)
        self.primary = primary_metric(self.metrics, self.primary)
        self.width = check_width(self.width)
        if self.subsamples < 0:
            raise InputError(f"Expected subsamples >= 0, got {self.subsamples}")
        if not 0 < self.subsample_ratio < 1:
            raise InputError(f"Expected 0 < subsample_ratio < 1, got {self.subsample_ratio}")


@dataclass
class RankResult:
    """Rows (one per model, candidates first by the primary metric), the risk rule, the
    config, and notes (e.g. which models have no classifier head for LEEP/NCE);
    :meth:`to_frame` gives a DataFrame."""

    rows: list[dict]
    rule: str
    config: RankConfig
    notes: list[str] = field(default_factory=list)

    def to_frame(self):
        """The rows as a pandas DataFrame, one row per model (pandas missing: one line naming
        the ``tables`` extra)."""
        from transferscope.frames import frame

        return frame(self.rows)


def _interval(values: np.ndarray, ratio: float) -> tuple[float, float]:
    """95 % subsampling interval; ``values[0]`` is the full-data value, the rest subsamples."""
    if len(values) < 2:
        return float("nan"), float("nan")
    scale = np.sqrt(ratio / (1.0 - ratio))
    lo, hi = np.percentile(values[1:] - values[1:].mean(), [2.5, 97.5])
    return float(values[0] + scale * lo), float(values[0] + scale * hi)


def _score_all(features, probs, labels, cfg: RankConfig, resamples,
               label: str = "metrics") -> dict[str, np.ndarray]:
    """{metric: array [full, resample_1, ..., resample_B]}; source-head metrics are NaN for a
    model without a head (``probs`` None). Progress: one update per metric (full data and its
    subsamples), in a transient unit named ``label``."""
    out = {}
    with unit(label, len(cfg.metrics), "metric", transient=True) as bar:
        for m in cfg.metrics:
            spec = get_metric(m)
            x = features if spec.inputs == "features" else probs
            if x is None:
                out[m] = np.full(1 + len(resamples), np.nan)
            else:
                opts = {k: v for k, v in cfg.metric_options.items() if k in spec.options}
                vals = [spec.func(x, labels, **opts)]
                vals += [spec.func(x[idx], labels[idx], **opts) for idx in resamples]
                out[m] = np.asarray(vals)
            bar.update(metric=m)
    return out


def rank(data: Dataset, models, config: RankConfig | None = None, **kw) -> RankResult:
    """Rank candidate models for a target, with baselines, intervals and a risk label.

    Parameters
    ----------
    data : Dataset
        The target (N labelled samples).
    models : list of str or Backend
        Model names (see :mod:`transferscope.names`), or backends already built (e.g. with
        overridden preprocessing: ``create_backend(name, preprocessing=...)``).
    config : RankConfig, optional
        Options; or pass them as keywords.
    **kw
        :class:`RankConfig` fields.

    Returns
    -------
    RankResult
        Per model: ``role``, ``dim`` (its feature width, before any ``width`` transform), each
        metric with its interval (``<m>``, ``<m>_lo``, ``<m>_hi``), ``p_first``, margins over
        the random twin and raw input with intervals, ``risk``, ``seconds``, ``layer`` (the
        layer scored).
    """
    from transferscope.backends import FinetunableBackend, create_backend
    from transferscope.backends.simple import random_twin
    from transferscope.features import FeatureCache, extract_features, extract_source_probs

    if config is not None and kw:
        raise InputError(f"Pass either config=RankConfig(...) or keyword options, got both "
                         f"(keywords: {', '.join(kw)})")
    cfg = config or RankConfig(**kw)
    built = {b.name: b for b in models if not isinstance(b, str)}
    models = list(dict.fromkeys(m if isinstance(m, str) else m.name for m in models))
    if not models:
        raise InputError("Expected at least one model, got none; e.g. --model effnet-lite:0")
    _, source_metrics = model_metrics(cfg.metrics, "rank")
    data = subsample(data, per_class=cfg.per_class, fraction=cfg.fraction, seed=cfg.seed)
    labels = np.asarray(data.labels)
    _, codes = np.unique(labels, return_inverse=True)
    size = int(round(cfg.subsample_ratio * len(labels)))
    resamples = [stratified_subsample(codes, size, cfg.seed + 1 + b)
                 for b in range(cfg.subsamples)]
    cache = FeatureCache(cfg.cache_dir)

    names = {m: parse_model_name(m) for m in models}
    backends = {m: built.get(m) or create_backend(m) for m in models}
    for b in backends.values():
        b.check_input(data)
    order = list(models)
    if cfg.baselines:
        for m, b in list(backends.items()):
            twin = names[m].twin()
            if (isinstance(b, FinetunableBackend) and not names[m].is_baseline
                    and twin not in backends):
                backends[twin] = random_twin(b)  # reuses the loaded weights
                names[twin] = parse_model_name(twin)
                order.append(twin)
        if "raw" not in backends:
            backends["raw"] = create_backend("raw")
            names["raw"] = parse_model_name("raw")
            order.append("raw")

    scores, seconds, dims, used, headless = {}, {}, {}, {}, []
    with unit(f"rank on {data.name}", len(order), "model") as bar:
        for name in order:
            start = time.perf_counter()
            backend = backends[name]
            layer = cfg.layer if (cfg.layer and name != "raw") else backend.default_layer()
            opts = {"cache": cache, "batch_size": cfg.batch_size, "device": cfg.device,
                    "num_workers": cfg.num_workers, "precision": cfg.precision}
            feats = extract_features(backend, data, [layer], **opts)
            x = next(iter(feats.values()))
            dims[name], used[name] = int(x.shape[1]), layer
            x = equalize_width(x, cfg.width)
            probs = extract_source_probs(backend, data, **opts) if source_metrics else None
            if source_metrics and probs is None:
                headless.append(name)
            scores[name] = _score_all(x, probs, labels, cfg, resamples, f"metrics of {name}")
            seconds[name] = time.perf_counter() - start
            bar.update(model=name)

    p = cfg.primary
    candidates = [m for m in models if not names[m].is_baseline] or models
    notes = _head_notes(source_metrics, headless, candidates, p)
    boot = np.stack([scores[m][p][1:] for m in candidates]) if cfg.subsamples else None
    if boot is not None:  # a model without a score (no head) is never the best
        boot = np.where(np.isnan(boot), -np.inf, boot)
    rows = []
    for name in order:
        row = {"model": name, "role": names[name].role, "dim": dims[name]}
        for m in cfg.metrics:
            lo, hi = _interval(scores[name][m], cfg.subsample_ratio)
            row[m] = float(scores[name][m][0])
            row[f"{m}_lo"], row[f"{m}_hi"] = lo, hi
        if name in candidates and boot is not None:
            row["p_first"] = float(np.mean(np.argmax(boot, axis=0) == candidates.index(name)))
        twin = names[name].twin()
        margins = {}
        for label, base in (("random", twin), ("raw", "raw")):
            if (row["role"] == "candidate" and base in scores
                    and not np.isnan(scores[base][p][0])):  # raw has no head for leep/nce
                diff = scores[name][p] - scores[base][p]
                lo, hi = _interval(diff, cfg.subsample_ratio)
                margins[label] = (lo, hi)
                row[f"margin_vs_{label}"] = float(diff[0])
                row[f"margin_vs_{label}_lo"], row[f"margin_vs_{label}_hi"] = lo, hi
        if row["role"] == "candidate":
            row["risk"] = _risk(margins)
        row["seconds"] = round(seconds[name], 3)
        row["layer"] = used[name]
        rows.append(row)
    rows.sort(key=lambda r: (r["role"] != "candidate", np.isnan(r[p]), -np.nan_to_num(r[p])))
    return RankResult(rows=rows, rule=RULE.format(primary=p), config=cfg, notes=notes)


def _head_notes(source_metrics, headless, candidates, primary) -> list[str]:
    """What the source-head metrics could not score; a one-line error when no candidate has a
    head, or when the primary metric needs one that a candidate lacks."""
    if not source_metrics or not headless:
        return []
    names = ", ".join(source_metrics)
    lacking = [m for m in candidates if m in headless]
    if lacking and len(lacking) == len(candidates):
        raise InputError(
            f"Expected a model with a classifier head for {names} (they score the source "
            f"model's class probabilities), got none among {', '.join(candidates)}; use "
            "feature metrics (logme, linear_probe, ...) or models with a head (effnet-lite, "
            "hf: *ForImageClassification / *ForSequenceClassification folders, torch: modules "
            "ending in a classifier)"
        )
    if lacking and primary in source_metrics:
        raise InputError(
            f"Expected every candidate to have a classifier head for the primary metric "
            f"{primary!r}, got none for {', '.join(lacking)}; pick a feature metric as "
            "--primary, or rank those models separately"
        )
    return [f"{names}: not scored for {', '.join(headless)} (no classifier head, so no "
            "source probabilities); NaN in their rows"]


def _risk(margins: dict) -> str:
    """The risk label from the margins' intervals (see :data:`RULE`)."""
    if not margins or any(np.isnan(v) for pair in margins.values() for v in pair):
        return "RISK"
    read = [interval_label(lo, hi, 0.0, ("above", "below", "spans"))
            for lo, hi in margins.values()]
    if "below" in read:
        return "LIKELY-NEGATIVE"
    if all(r == "above" for r in read):  # both baselines, or the twin alone where raw
        # cannot be scored (a source-head primary metric: raw has no head)
        return "LIKELY-POSITIVE"
    return "RISK"
