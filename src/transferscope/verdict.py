"""Did transfer help? Statistics of transfer vs scratch, the verdict rule, learning curves.

Pure functions of per-seed, per-test-sample correctness: ``correct`` arrays of shape
(n_seeds, n_test) with 1 where the model was right.

- :func:`mean_ci`: the mean over seeds with a Student-t 95 % interval;
- :func:`paired_gain`: transfer minus scratch accuracy with a two-level paired bootstrap
  (seeds and test samples resampled together, the same draws for both arms), which captures
  both training noise and test-set noise;
- :func:`interval_label`: the one rule that reads an interval against a margin (verdicts, rank
  risk margins, layer verification outcomes, report texts);
- :func:`negative_transfer_verdict`: POSITIVE when the whole interval of the gain is above
  ``+margin``, NEGATIVE when it is below ``-margin``, INCONCLUSIVE otherwise;
- :func:`summarise_curves`, :func:`time_to_target`: break-even, data and time saved.
"""

from __future__ import annotations

import numpy as np

VERDICT_RULE = ("verdict: POSITIVE if the 95% paired-bootstrap interval of the test-accuracy "
                "gain (transfer - scratch) lies above +{m:g}; NEGATIVE if it lies below -{m:g}; "
                "INCONCLUSIVE otherwise")


def mean_ci(values, level: float = 0.95, bounds: tuple[float, float] | None = None,
            ) -> tuple[float, float, float]:
    """Mean with a Student-t interval.

    Parameters
    ----------
    values : array of shape (n,)
        E.g. per-seed test accuracies.
    level : float
        Confidence level.
    bounds : tuple of float, optional
        Where the quantity lives (``(0, 1)`` for accuracies): the interval is clipped to it,
        since a t interval ignores that an accuracy cannot pass 0 or 1.

    Returns
    -------
    tuple of float
        ``(mean, low, high)``; ``low = high = mean`` for a single value.
    """
    import scipy.stats

    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, mean, mean
    half = float(scipy.stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, low, high


def paired_gain(transfer_correct, scratch_correct, *, n_boot: int = 2000, seed: int = 0,
                level: float = 0.95) -> tuple[float, float, float]:
    """Transfer minus scratch mean accuracy with a paired two-level bootstrap interval.

    Parameters
    ----------
    transfer_correct, scratch_correct : array of shape (n_seeds, n_test)
        1 where the arm's run of that seed was right on that test sample.
    n_boot : int
        Bootstrap draws.
    seed : int
        Seed of the draws.
    level : float
        Interval level.

    Returns
    -------
    tuple of float
        ``(gain, low, high)``.
    """
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


VERDICTS = ("POSITIVE", "NEGATIVE", "INCONCLUSIVE")


def interval_label(low: float, high: float, margin: float = 0.0, labels=VERDICTS):
    """Read an interval against a margin: the one rule behind every verdict-like label.

    Parameters
    ----------
    low, high : float
        The interval of a difference (e.g. transfer minus scratch accuracy).
    margin : float
        The smallest difference that counts (>= 0).
    labels : tuple of 3
        ``(above, below, neither)``.

    Returns
    -------
    object
        ``labels[0]`` if ``low > margin``; ``labels[1]`` if ``high < -margin``; else
        ``labels[2]`` (also for a NaN interval).
    """
    if low > margin:
        return labels[0]
    if high < -margin:
        return labels[1]
    return labels[2]


def negative_transfer_verdict(low: float, high: float, margin: float = 0.0) -> str:
    """POSITIVE / NEGATIVE / INCONCLUSIVE for a gain interval (see :data:`VERDICT_RULE`)."""
    return interval_label(low, high, margin)


def best_time(curve) -> float:
    """Seconds until the first epoch with the best validation accuracy ended.

    Parameters
    ----------
    curve : list of (seconds, val_acc)
    """
    best = max(a for _, a in curve)
    return next(t for t, a in curve if a == best)


def time_to_target(curves, target: float) -> float:
    """Median over runs of the seconds until validation accuracy first reached ``target``.

    Parameters
    ----------
    curves : list of list of (seconds, val_acc)
        One validation curve per run.
    target : float
        Validation accuracy.

    Returns
    -------
    float
        ``inf`` for a run that never did, so the median is ``inf`` when most never did.
    """
    times = [next((t for t, a in c if a >= target - 1e-12), float("inf")) for c in curves]
    return float(np.median(times))


class LearningCurves(dict):
    """What :func:`summarise_curves` returns: a dict with ``points`` (one per training fraction)
    and ``break_even_fraction``; :meth:`to_frame` gives the points as a DataFrame."""

    def to_frame(self):
        """The learning curves, one row per training fraction.

        Returns
        -------
        pandas.DataFrame of shape (n_fractions, n_columns)
            The fields of ``self["points"]`` in fraction order: ``fraction``, ``n_train``,
            ``transfer_acc``, ``scratch_acc``, ``gain``, ``gain_lo``, ``gain_hi``,
            ``verdict``, ``transfer_best_s``, ``scratch_best_s``, ``data_saved_x``,
            ``time_saved_s`` (those the points have); ``attrs["break_even_fraction"]``.
        """
        from transferscope.frames import frame

        return frame(self["points"], ["fraction"],
                     break_even_fraction=self["break_even_fraction"])


def summarise_curves(points: list[dict]) -> LearningCurves:
    """Break-even fraction, data saved and training time saved from per-fraction points.

    - break-even fraction: the first fraction at which scratch's mean test accuracy reaches
      transfer's (linear interpolation of the gain between fractions), if it does;
    - data saved at fraction f: how much more training data scratch needs to match transfer's
      accuracy at f, as a ratio (scratch's running-best curve, interpolated); ``inf`` when
      scratch never gets there within the fractions tried;
    - training time saved at fraction f, likewise in seconds, on scratch's running-best
      accuracy-vs-time (to the selected epoch) curve, minus transfer's own time at f.

    Parameters
    ----------
    points : list of dict
        One per fraction: ``fraction``, ``gain``, ``transfer_acc``, ``scratch_acc``,
        ``transfer_best_s``, ``scratch_best_s``.

    Returns
    -------
    LearningCurves
        A dict: ``points`` (sorted by fraction, each with ``data_saved_x`` and
        ``time_saved_s`` added) and ``break_even_fraction`` (``None`` if scratch never catches
        up); ``.to_frame()`` gives one row per fraction.
    """
    points = sorted(points, key=lambda p: p["fraction"])
    fractions = [p["fraction"] for p in points]
    gains = [p["gain"] for p in points]
    break_even = None
    for i in range(len(fractions) - 1):
        (f0, g0), (f1, g1) = (fractions[i], gains[i]), (fractions[i + 1], gains[i + 1])
        if g0 > 0 >= g1:
            break_even = f0 + (f1 - f0) * g0 / (g0 - g1)
            break
    scratch_best = np.maximum.accumulate([p["scratch_acc"] for p in points])
    by_time = sorted((p["scratch_best_s"], p["scratch_acc"]) for p in points)
    times = [t for t, _ in by_time]
    time_best = np.maximum.accumulate([a for _, a in by_time])
    for p in points:
        need = _inverse(fractions, scratch_best, p["transfer_acc"])
        p["data_saved_x"] = need / p["fraction"] if need is not None else float("inf")
        need_s = _inverse(times, time_best, p["transfer_acc"])
        p["time_saved_s"] = (need_s - p["transfer_best_s"]) if need_s is not None else float("inf")
    return LearningCurves(points=points, break_even_fraction=break_even)


def _inverse(xs, ys, target):
    """Smallest x at which the non-decreasing curve ys reaches target (interpolated)."""
    for i, y in enumerate(ys):
        if y >= target:
            if i == 0:
                return xs[0]
            return xs[i - 1] + (xs[i] - xs[i - 1]) * (target - ys[i - 1]) / (y - ys[i - 1])
    return None
