"""Did transfer help? Statistics of transfer vs scratch, and the verdict rule.

Pure functions of per-seed, per-test-sample correctness: ``correct`` arrays of shape
(n_seeds, n_test) with 1 where the model was right.

- :func:`mean_ci`: the mean over seeds with a Student-t 95 % interval;
- :func:`paired_gain`: transfer minus scratch accuracy with a two-level paired bootstrap
  (seeds and test samples resampled together, the same draws for both arms), which captures
  both training noise and test-set noise;
- :func:`negative_transfer_verdict`: POSITIVE when the whole interval of the gain is above
  ``+margin``, NEGATIVE when it is below ``-margin``, INCONCLUSIVE otherwise.
"""

from __future__ import annotations

import numpy as np

VERDICT_RULE = ("verdict: POSITIVE if the 95% paired-bootstrap interval of the test-accuracy "
                "gain (transfer - scratch) lies above +{m:g}; NEGATIVE if it lies below -{m:g}; "
                "INCONCLUSIVE otherwise")


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) with a t interval; low = high = mean for a single value."""
    import scipy.stats

    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, mean, mean
    half = float(scipy.stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean, mean - half, mean + half


def paired_gain(transfer_correct, scratch_correct, *, n_boot: int = 2000, seed: int = 0,
                level: float = 0.95) -> tuple[float, float, float]:
    """(gain, low, high) of mean accuracy, transfer minus scratch, paired two-level bootstrap."""
    t = np.asarray(transfer_correct, dtype=float)
    s = np.asarray(scratch_correct, dtype=float)
    if t.shape != s.shape or t.ndim != 2:
        raise ValueError(f"expected two (seeds, test) arrays of one shape, got {t.shape} and "
                         f"{s.shape}")
    diff = t - s  # (seeds, n_test)
    gain = float(diff.mean())
    rng = np.random.default_rng(seed)
    n_seeds, n_test = diff.shape
    boot = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # blocks of draws keep memory at 256 x n_test
        m = min(256, n_boot - start)
        counts = rng.multinomial(n_test, np.full(n_test, 1.0 / n_test), size=m)  # samples
        per_seed = counts @ diff.T / n_test  # (m, n_seeds): each seed's mean on the draw
        pick = rng.integers(0, n_seeds, (m, n_seeds))  # seeds drawn with replacement
        boot[start : start + m] = np.take_along_axis(per_seed, pick, axis=1).mean(axis=1)
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return gain, float(lo), float(hi)


def negative_transfer_verdict(low: float, high: float, margin: float = 0.0) -> str:
    if low > margin:
        return "POSITIVE"
    if high < -margin:
        return "NEGATIVE"
    return "INCONCLUSIVE"
