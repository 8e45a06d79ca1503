"""Streaming LogME and H-scores: chunked sufficient statistics, memory independent of N.

LogME, the H-score and the shrinkage H-score depend on the data only through counts, class sums,
the D x D Gram matrix and (for Ledoit-Wolf) the fourth moment, so features can arrive in chunks
(a memmap larger than memory, a feature extractor's batches) and the score equals the in-memory
one up to floating-point summation order. Memory is O(D^2 + C D + chunk), independent of N.

>>> scorer = StreamingScorer(n_features=512, classes=range(100))  # doctest: +SKIP
>>> for x, y in batches:                                            # doctest: +SKIP
...     scorer.update(x, y)
>>> scorer.scores()                                                 # doctest: +SKIP
{'logme': ..., 'hscore': ..., 'hscore_reg': ...}
"""

from __future__ import annotations

import numpy as np

from transferscope.errors import InputError
from transferscope.metrics._stats import ClassStats, chunk_rows
from transferscope.metrics.hscore import hscore_from_stats, hscore_reg_from_stats
from transferscope.metrics.logme import logme_from_stats
from transferscope.registry import suggest
from transferscope.validation import check_features, check_labels

STREAMING_METRICS = {
    "logme": lambda stats: logme_from_stats(stats).score,
    "hscore": hscore_from_stats,
    "hscore_reg": hscore_reg_from_stats,
}


class StreamingScorer:
    """Accumulate (features, labels) chunks, then compute the streaming-capable metrics.

    Parameters
    ----------
    n_features : int
    classes : sequence
        Every label value that can occur (strings or ints); chunks map their labels onto it.
    metrics : sequence of str
        Any of ``"logme"``, ``"hscore"``, ``"hscore_reg"``.
    gram_dtype, device :
        As for :func:`transferscope.metrics.logme`.
    """

    def __init__(self, n_features, classes, *, metrics=("logme", "hscore", "hscore_reg"),
                 gram_dtype="float64", device=None):
        for name in metrics:
            if name not in STREAMING_METRICS:
                raise InputError(
                    f"Metric {name!r} cannot be streamed{suggest(name, STREAMING_METRICS)} "
                    f"(streaming metrics: {', '.join(STREAMING_METRICS)})"
                )
        self.classes = np.unique(np.asarray(list(classes)))
        if len(self.classes) < 2:
            raise InputError(
                f"Expected at least 2 classes, got {len(self.classes)}; pass every label value"
            )
        self.metrics = tuple(metrics)
        self.stats = ClassStats(n_features, len(self.classes), gram_dtype=gram_dtype,
                                device=device, moments="hscore_reg" in self.metrics)

    def update(self, features, labels) -> StreamingScorer:
        """Add one chunk: ``features`` (m, D), ``labels`` (m,) with values in ``classes``."""
        x = check_features(features, keep_float32=True, check_constant=False, min_samples=1)
        y = np.asarray(labels).reshape(-1)
        if len(y) != len(x):
            raise InputError(
                f"Expected {len(x)} labels for this chunk, got {len(y)}; pass one label per row"
            )
        codes = np.searchsorted(self.classes, y)
        codes = np.minimum(codes, len(self.classes) - 1)
        unknown = self.classes[codes] != y
        if unknown.any():
            raise InputError(
                f"Expected labels among the {len(self.classes)} declared classes, got "
                f"{y[unknown][0]!r}; declare every class in StreamingScorer(classes=...)"
            )
        self.stats.update(x, codes.astype(np.int64))
        return self

    def scores(self) -> dict[str, float]:
        """The metrics on everything seen so far."""
        stats = self.stats.finalize()
        empty = np.flatnonzero(stats.counts == 0)
        if len(empty):
            raise InputError(
                f"Expected samples of every declared class, got none of "
                f"{self.classes[empty][:5].tolist()}; drop those classes from classes=..."
            )
        return {name: float(STREAMING_METRICS[name](stats)) for name in self.metrics}


def streaming_score(features, labels, *, metrics=("logme", "hscore", "hscore_reg"),
                    rows_per_chunk=None, gram_dtype="float64", device=None,
                    progress=None) -> dict[str, float]:
    """Score an array-like too large for memory (e.g. ``np.load(..., mmap_mode="r")``).

    Only ``rows_per_chunk`` rows are read and converted at a time; ``labels`` (N,) is held in
    memory. ``progress`` is an optional callable ``progress(rows_done, rows_total)``.
    """
    n, d = features.shape
    checked = check_labels(labels, n)
    scorer = StreamingScorer(d, checked.classes, metrics=metrics, gram_dtype=gram_dtype,
                             device=device)
    step = rows_per_chunk or chunk_rows(d, features.dtype.itemsize)
    for start in range(0, n, step):
        chunk = np.asarray(features[start : start + step])
        scorer.update(chunk, checked.classes[checked.codes[start : start + step]])
        if progress is not None:
            progress(min(n, start + step), n)
    return scorer.scores()
