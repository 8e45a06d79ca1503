"""The one validation gate for every metric: features, labels and source probabilities.

Every rejection is a one-line :class:`~transferscope.errors.InputError` that names what was
expected, what came and how to fix it. What is not rejected is handled and documented here:

- labels of any hashable kind (strings, booleans, sparse or huge integers such as ``2**62``)
  are mapped to codes ``0..C-1`` in sorted order, so no array of size ``max(label)`` is ever
  allocated (the reference implementations do, and overflow);
- a label column of shape ``(N, 1)`` is flattened; non-contiguous or non-float64 features are
  copied once to C-contiguous float64 (float32 is kept where a metric asks for it);
- source probabilities whose rows sum to 1 within ``1e-4`` are renormalised exactly;
- constant feature columns are kept (each metric documents how it treats them); features that are
  constant in every column carry no information and are rejected.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from transferscope.errors import ConstantFeaturesError, InputError, TransferabilityWarning

PROB_SUM_ATOL = 1e-4


@dataclass(frozen=True)
class CheckedLabels:
    """Labels after the gate.

    codes : int64 array of shape (n_samples,) with values in ``0..n_classes-1`` (classification)
        or float64 array of shape (n_samples, n_targets) (regression).
    classes : the original label values, ``classes[code]`` (``None`` for regression).
    counts : samples per class (``None`` for regression).
    """

    codes: np.ndarray
    classes: np.ndarray | None
    counts: np.ndarray | None

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return 0 if self.classes is None else len(self.classes)


def _describe(a) -> str:
    a = np.asarray(a) if not hasattr(a, "shape") else a
    return f"{a.ndim}-D array of shape {tuple(a.shape)} and dtype {a.dtype}"


def check_features(
    features,
    *,
    name: str = "features",
    keep_float32: bool = False,
    check_constant: bool = True,
    min_samples: int = 2,
) -> np.ndarray:
    """Return ``features`` as a finite, C-contiguous float array (n_samples, n_features)."""
    if hasattr(features, "detach"):  # a torch tensor
        features = features.detach().cpu().numpy()
    try:
        arr = np.asarray(features)
    except Exception as exc:  # ragged lists and the like
        raise InputError(
            f"Expected {name} as a 2-D numeric array (n_samples, n_features), got an object numpy "
            f"cannot convert ({exc}); pass a numpy array or a list of equal-length rows"
        ) from None
    if arr.dtype.kind not in "biuf":
        raise InputError(
            f"Expected {name} to be numeric, got dtype {arr.dtype}; convert the values to floats "
            f"(e.g. np.asarray({name}, dtype=float)) or drop non-numeric columns"
        )
    if arr.ndim == 1:
        raise InputError(
            f"Expected {name} as a 2-D array (n_samples, n_features), got a 1-D array of shape "
            f"{arr.shape}; reshape with {name}.reshape(-1, 1) if it is a single feature"
        )
    if arr.ndim != 2:
        raise InputError(
            f"Expected {name} as a 2-D array (n_samples, n_features), got {_describe(arr)}; "
            f"pool or flatten the trailing axes first, e.g. {name}.reshape(len({name}), -1)"
        )
    if arr.shape[0] < min_samples or arr.shape[1] < 1:
        raise InputError(
            f"Expected {name} with at least {min_samples} samples and 1 feature, got shape "
            f"{arr.shape}; "
            "pass more data"
        )
    dtype = arr.dtype if (keep_float32 and arr.dtype == np.float32) else np.float64
    arr = np.ascontiguousarray(arr, dtype=dtype)
    _check_finite(arr, name)
    _check_scale(arr, name)
    # rows 0 and 1 differ in almost every real input: only then is the full scan skipped
    if check_constant and not (arr[1] != arr[0]).any() and not (arr != arr[:1]).any():
        raise ConstantFeaturesError(
            f"Expected {name} that vary across samples, got every column constant; "
            "check the feature extraction (a dead layer or a wrong input scale)"
        )
    return arr


# Largest magnitude whose squares, summed over a Gram matrix of up to ~1e8 terms, stay finite
# (float64 overflows near 1.8e308, float32 near 3.4e38); real features are nowhere near.
MAX_SCALE = {np.dtype(np.float64): 1e100, np.dtype(np.float32): 1e15}


def _check_scale(arr: np.ndarray, name: str) -> None:
    """Reject features so large that second moments overflow (every metric would return
    overflowed numbers, chance, or a linear-algebra error)."""
    limit = MAX_SCALE.get(arr.dtype, 1e100)
    peak = max(abs(float(arr.max())), abs(float(arr.min())))
    if peak > limit:
        raise InputError(
            f"Expected {name} of a sane scale (|x| <= {limit:g}), got values up to {peak:.3g}, "
            "whose squares overflow; standardise them first (e.g. (x - x.mean(0)) / x.std(0))"
        )


def _check_finite(arr: np.ndarray, name: str, total=None) -> None:
    """Reject NaN/Inf. A finite sum proves every value finite (one pass, no temporary);
    only when it is not (NaN, Inf, or an overflowing sum) are the values inspected."""
    if np.isfinite(arr.sum() if total is None else total):
        return
    bad = ~np.isfinite(arr)
    if not bad.any():  # the sum overflowed; every value is finite
        return
    rows = np.flatnonzero(bad.any(axis=1))
    kind = "NaN" if np.isnan(arr).any() else "Inf"
    raise InputError(
        f"Expected finite {name}, got {int(bad.sum())} non-finite values ({kind}) in "
        f"{len(rows)} rows (first at row {int(rows[0])}); drop or impute those rows"
    )


def check_labels(
    labels,
    n_samples: int,
    *,
    regression: bool = False,
    min_per_class: int = 1,
    name: str = "labels",
) -> CheckedLabels:
    """Map labels to codes ``0..C-1`` (classification) or float targets (regression)."""
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 1 and not regression:
        arr = arr[:, 0]
    if arr.ndim == 0 or len(arr) != n_samples:
        got = "a scalar" if arr.ndim == 0 else f"{len(arr)}"
        raise InputError(
            f"Expected {n_samples} {name}, one per feature row, got {got}; pass the labels of "
            "exactly the samples the features come from, in the same order"
        )
    if regression:
        if arr.dtype.kind not in "biuf":
            raise InputError(
                f"Expected numeric regression targets, got dtype {arr.dtype}; convert them to "
                "floats or use a classification metric"
            )
        targets = np.ascontiguousarray(arr, dtype=np.float64)
        if targets.ndim == 1:
            targets = targets[:, None]
        if targets.ndim != 2:
            raise InputError(
                f"Expected regression targets of shape (n_samples,) or (n_samples, n_targets), "
                f"got {_describe(arr)}; reshape them"
            )
        if not np.isfinite(targets).all():
            raise InputError(
                f"Expected finite regression targets, got {int((~np.isfinite(targets)).sum())} "
                "NaN/Inf values; drop or impute those samples"
            )
        return CheckedLabels(codes=targets, classes=None, counts=None)

    if arr.ndim != 1:
        hint = (
            "; if they are one-hot, pass labels.argmax(axis=1)"
            if arr.ndim == 2
            else ""
        )
        raise InputError(
            f"Expected {name} of shape (n_samples,), got {_describe(arr)}{hint}; for "
            "continuous targets pass regression=True"
        )
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise InputError(
                f"Expected {name} without NaN/Inf, got {int((~np.isfinite(arr)).sum())}; drop "
                "the unlabelled samples"
            )
        if np.any(np.abs(arr) >= 2.0**53):
            raise InputError(
                f"Expected integer-valued {name}, got floats beyond 2**53 that cannot hold an "
                "exact integer (an overflowed label?); pass the labels as int64 or strings"
            )
        if np.any(arr != np.round(arr)):
            raise InputError(
                f"Expected class {name}, got non-integer floats (e.g. "
                f"{arr[arr != np.round(arr)][0]!r}); for continuous targets pass regression=True"
            )
    if arr.dtype.kind == "O":
        kinds = {type(v).__name__ for v in arr.tolist()}
        if len(kinds) > 1:
            raise InputError(
                f"Expected {name} of one type, got a mix of {sorted(kinds)}; convert them all "
                "to str or all to int"
            )
    try:
        classes, codes = np.unique(arr, return_inverse=True)
    except TypeError as exc:
        raise InputError(
            f"Expected sortable {name} (ints or strings), got values numpy cannot order ({exc}); "
            "convert them to str"
        ) from None
    codes = codes.reshape(-1).astype(np.int64, copy=False)
    counts = np.bincount(codes, minlength=len(classes))
    if len(classes) < 2:
        raise InputError(
            f"Expected at least 2 classes in {name}, got 1 ({classes[0]!r}); a transferability "
            "score needs a task to discriminate - pass data from two or more classes"
        )
    if min_per_class > 1 and counts.min() < min_per_class:
        small = np.flatnonzero(counts < min_per_class)
        shown = ", ".join(f"{classes[i]!r} ({counts[i]})" for i in small[:5])
        raise InputError(
            f"Expected at least {min_per_class} samples in every class, got fewer in "
            f"{len(small)} class(es): {shown}; drop or merge those classes, or collect more samples"
        )
    return CheckedLabels(codes=codes, classes=classes, counts=counts)


def check_source_probs(probs, n_samples: int, *, name: str = "source_probs") -> np.ndarray:
    """Return row-stochastic source-label probabilities of shape (n_samples, n_source_classes)."""
    if hasattr(probs, "detach"):
        probs = probs.detach().cpu().numpy()
    arr = np.asarray(probs)
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        arr = check_features(arr, name=name, check_constant=False)  # raises the shape error
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    sums = arr.sum(axis=1)
    _check_finite(arr, name, total=sums.sum())
    if arr.shape[0] != n_samples:
        raise InputError(
            f"Expected {name} with {n_samples} rows (one per sample), got {arr.shape[0]}; "
            "pass the source model's probabilities for the same samples"
        )
    if arr.min() < 0:
        raise InputError(
            f"Expected {name} >= 0, got a minimum of {arr.min():.4g}; these look like logits - "
            "apply a softmax over the source classes first"
        )
    worst = float(np.max(np.abs(sums - 1.0)))
    if worst > PROB_SUM_ATOL:
        raise InputError(
            f"Expected each row of {name} to sum to 1, got row sums off by up to {worst:.3g}; "
            "apply a softmax (for logits) or divide each row by its sum"
        )
    return arr if worst <= 1e-12 else arr / sums[:, None]


def warn_if_wide(metric: str, n_samples: int, n_features: int, advice: str) -> None:
    """Warn where D >= N leaves a covariance-based score degenerate."""
    if n_features >= n_samples:
        warnings.warn(
            f"{metric}: {n_features} features >= {n_samples} samples, so the feature covariance "
            f"is singular and the score is less informative; {advice}",
            TransferabilityWarning,
            stacklevel=3,
        )
