"""Seeded, stratified splits and per-class subsampling."""

from __future__ import annotations

import warnings

import numpy as np

from transferscope.data.dataset import Dataset
from transferscope.errors import InputError


def _by_class(labels: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    if labels.ndim != 1 or len(labels) == 0:
        raise InputError(f"Expected labels of shape (N,) with N >= 1, got shape {labels.shape}; "
                         "pass a dataset with samples")
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(-1)
    return [rng.permutation(np.flatnonzero(codes == c)) for c in range(codes.max() + 1)]


def subsample_indices(labels, *, per_class: int | None = None,
                      fraction: float | None = None, seed: int = 0) -> np.ndarray:
    """Sorted positions keeping ``per_class`` samples of every class, or ``fraction`` of each
    class (at least 1), chosen at random under ``seed``."""
    labels = np.asarray(labels)
    if per_class is None and fraction is None:
        return np.arange(len(labels))
    if per_class is not None and fraction is not None:
        raise InputError(f"Expected one of per_class and fraction, got both (per_class "
                         f"{per_class}, fraction {fraction}); pass --per-class or --fraction")
    if per_class is not None and per_class < 1:
        raise InputError(f"Expected per_class >= 1, got {per_class}; e.g. --per-class 20")
    if fraction is not None and not 0 < fraction <= 1:
        raise InputError(f"Expected 0 < fraction <= 1, got {fraction}; e.g. --fraction 0.1")
    rng = np.random.default_rng(seed)
    keep, short = [], []
    for members in _by_class(labels, rng):
        n = per_class if per_class is not None else max(1, round(fraction * len(members)))
        if n > len(members):
            short.append(len(members))
        keep.append(members[:n])
    if short:
        warnings.warn(f"per_class {per_class}: {len(short)} class(es) have fewer samples "
                      f"({', '.join(map(str, sorted(short)[:5]))}); they keep all they have",
                      stacklevel=3)
    return np.sort(np.concatenate(keep))


def subsample(data: Dataset, *, per_class: int | None = None, fraction: float | None = None,
              seed: int = 0) -> Dataset:
    """Keep ``per_class`` samples of every class, or ``fraction`` of each class (at least 1).

    A regression dataset (``data.task == "regression"``) is refused, with or without
    subsampling: this is the first step of every classification command (rank, layers).
    """
    data.require_classes("per-class subsampling (rank, layers, finetune)")
    if per_class is None and fraction is None:
        return data
    return data.subset(subsample_indices(data.labels, per_class=per_class, fraction=fraction,
                                         seed=seed))


def stratified_split(labels, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> list[np.ndarray]:
    """Index arrays (sorted) for each fraction, every class split in the same proportions.

    Each class contributes at least one sample to every part when it has enough samples; the
    split is a pure function of (labels, fractions, seed).
    """
    fractions = np.asarray(fractions, dtype=float).reshape(-1)
    if (not np.isfinite(fractions).all() or np.any(fractions <= 0)
            or abs(fractions.sum() - 1) > 1e-9):
        raise InputError(
            f"Expected positive split fractions summing to 1, got {fractions.tolist()}"
        )
    rng = np.random.default_rng(seed)
    parts = [[] for _ in fractions]
    for members in _by_class(np.asarray(labels), rng):
        n = len(members)
        counts = np.floor(fractions * n).astype(int)
        # give the remainder to the parts furthest below their share, then ensure >= 1 each
        for i in np.argsort(-(fractions * n - counts))[: n - counts.sum()]:
            counts[i] += 1
        if n >= len(fractions):
            while (counts == 0).any():
                counts[np.argmax(counts)] -= 1
                counts[np.argmin(counts)] += 1
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for i in range(len(fractions)):
            parts[i].append(members[bounds[i] : bounds[i + 1]])
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def training_part(data: Dataset, seed: int = 0) -> Dataset:
    """The training part of the seeded 60/20/20 split that fine-tuning uses: what scores,
    profiles and head searches may look at without touching validation or test data."""
    data.require_classes("a stratified train/validation/test split")
    return data.subset(stratified_split(data.labels, seed=seed)[0])


def stratified_folds(labels, k: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint index arrays (sorted) covering every sample once, each class spread over
    the folds as evenly as it divides (the folds of stratified k-fold cross-validation).

    Each class's members are shuffled under ``seed`` and dealt out in turn, continuing where
    the previous class stopped, so fold sizes differ by at most one. A pure function of
    (labels, k, seed).

    Parameters
    ----------
    labels : array of shape (N,)
    k : int
        Folds, 2 <= k <= N.
    seed : int

    Returns
    -------
    list of ndarray of int64
        Fold ``f``'s sample positions.
    """
    labels = np.asarray(labels)
    if not 2 <= k <= len(labels):
        raise InputError(f"Expected 2 <= folds <= {len(labels)} (the samples), got {k}; "
                         "e.g. --splits 5")
    order = np.concatenate(_by_class(labels, np.random.default_rng(seed)))
    fold_of = np.empty(len(labels), dtype=np.int64)
    fold_of[order] = np.arange(len(labels)) % k
    return [np.flatnonzero(fold_of == f).astype(np.int64) for f in range(k)]
