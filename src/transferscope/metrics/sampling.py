"""Seeded, class-stratified subsampling (bounds the memory of the O(N^2) metrics)."""

from __future__ import annotations

import numpy as np


def stratified_subsample(codes: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of about ``size`` samples, each class kept in proportion (at least 2 per class).

    Sorted, so the subsample keeps the original order; deterministic for a given ``seed``.
    """
    n = len(codes)
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    counts = np.bincount(codes)
    quota = np.maximum(np.minimum(counts, 2), np.floor(counts * size / n).astype(np.int64))
    picked = []
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for c in np.flatnonzero(counts):
        members = order[bounds[c] : bounds[c + 1]]
        picked.append(rng.choice(members, size=int(quota[c]), replace=False))
    return np.sort(np.concatenate(picked))
