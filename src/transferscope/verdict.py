"""Did transfer help? Statistics of transfer vs scratch, the verdict rule, learning curves.

Pure functions of per-seed, per-test-sample correctness: ``correct`` arrays of shape
(n_seeds, n_test) with 1 where the model was right.

- :func:`mean_ci`: the mean over seeds with a Student-t 95 % interval;
- :func:`paired_gain`: transfer minus scratch accuracy, paired per seed and test sample, with a
  t interval whose standard error has a test-sample and a seed level (Satterthwaite degrees of
  freedom) and the minimum detectable effect (:class:`Gain`: the power statement, and whether
  an INCONCLUSIVE means "no effect" or "too little evidence");
- :func:`interval_label`: the one rule that reads an interval against a margin (verdicts, rank
  risk margins, layer verification outcomes, report texts);
- :func:`negative_transfer_verdict`: POSITIVE when the whole interval of the gain is above
  ``+margin``, NEGATIVE when it is below ``-margin``, INCONCLUSIVE otherwise;
- :func:`summarise_curves`, :func:`time_to_target`: break-even, data and time saved.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

VERDICT_RULE = ("verdict: POSITIVE if the 95% interval (paired t over test samples and "
                "seeds) of the test-accuracy gain (transfer - scratch) lies above +{m:g}; "
                "NEGATIVE if it lies below -{m:g}; INCONCLUSIVE otherwise")


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


#: Power at which :attr:`Gain.mde` is stated.
POWER = 0.8
#: Gains within +-this are "no effect" when the whole interval lies inside (Gain.reading).
EQUIVALENCE = 0.02


@dataclass(frozen=True)
class Gain:
    """Transfer minus baseline accuracy with its interval and the power of the comparison.

    Unpacks as ``gain, low, high``.

    Attributes
    ----------
    gain, low, high : float
        The mean gain and its interval.
    se : float
        Its standard error (test-sample and seed levels together).
    df : float
        Satterthwaite degrees of freedom of the t interval.
    n_test : int
        Test samples (with cross-validation: every sample, tested once per repetition).
    n_seeds : int
        Seeds (repetitions) per arm.
    mde : float
        Minimum detectable effect: the smallest true gain this comparison finds (interval
        clear of 0) with probability :data:`POWER`, ``(t_{1-a/2} + t_{POWER}) * se``.
    level : float
        Interval level.
    """

    gain: float
    low: float
    high: float
    se: float = float("nan")
    df: float = float("nan")
    n_test: int = 0
    n_seeds: int = 0
    mde: float = float("nan")
    level: float = 0.95

    def __iter__(self):
        return iter((self.gain, self.low, self.high))

    def __getitem__(self, i):
        return (self.gain, self.low, self.high)[i]

    def __len__(self):
        return 3

    def power_statement(self) -> str:
        """E.g. ``with 40 test samples and 3 seeds, gains smaller than +-0.12 cannot be told
        apart from 0 (80 % power)``."""
        return (f"with {self.n_test} test samples and {self.n_seeds} seed"
                f"{'s' if self.n_seeds != 1 else ''}, gains smaller than +-{self.mde:.3f} "
                f"cannot be told apart from 0 ({POWER:.0%} power)")

    def reading(self, margin: float = 0.0, equivalence: float = EQUIVALENCE) -> str:
        """Why the verdict is what it is: for INCONCLUSIVE, ``"no effect"`` when the whole
        interval lies within +-``equivalence`` (an equivalence test, Schuirmann 1987), else
        ``"too little evidence"``; for POSITIVE / NEGATIVE, ``"effect"``."""
        if interval_label(self.low, self.high, margin) != "INCONCLUSIVE":
            return "effect"
        if -equivalence < self.low and self.high < equivalence:
            return "no effect"
        return "too little evidence"

    def explain(self, margin: float = 0.0, equivalence: float = EQUIVALENCE) -> str:
        """The verdict's reading and power statement, one line."""
        why = self.reading(margin, equivalence)
        if why == "no effect":
            head = f"no effect: the interval lies within +-{equivalence:g}"
        elif why == "too little evidence":
            head = "too little evidence"
        else:
            head = "the interval excludes 0" if margin == 0 else f"beyond +-{margin:g}"
        return f"{head}; {self.power_statement()}"

    def to_dict(self) -> dict:
        """Every field, JSON-able."""
        return dataclasses.asdict(self)


def paired_gain(transfer_correct, scratch_correct, *, level: float = 0.95) -> Gain:
    """Transfer minus scratch mean accuracy, paired per test sample and seed, with a t interval
    whose error has a test-sample and a seed level.

    With ``d[s, i]`` the difference of the two arms' correctness on sample ``i`` under seed
    ``s`` (k seeds, n samples), the standard error of the mean gain is
    ``sqrt(var_i(mean_s d) / n + var_s(mean_i d) / k)``: the test-sample level (what a new
    test set would change; the limit of a bootstrap over test samples) plus the seed level
    (what new training runs would change, estimated from k values). The interval is
    ``gain +- t_{1-a/2, df} * se`` with Satterthwaite's degrees of freedom (Satterthwaite
    1946, "An approximate distribution of estimates of variance components"), so with few
    seeds the seed level widens the interval as a t interval over seeds does (a bootstrap
    over 3 seed values under-covers: ``bench/coverage.py``). The sample-by-seed interaction
    enters both levels, which errs on the wide side; the test level is at least ``3 / n**2``
    (two arms that agree on every test sample have not shown that they are equal).

    Parameters
    ----------
    transfer_correct, scratch_correct : array of shape (n_seeds, n_test)
        1 where the arm's run of that seed was right on that test sample (with
        cross-validation: every sample, each tested by the fold that held it out).
    level : float
        Interval level.

    Returns
    -------
    Gain
        Unpacks as ``(gain, low, high)``; also ``se``, ``df``, ``mde`` (minimum detectable
        effect at :data:`POWER`) and the sizes.
    """
    import scipy.stats

    t = np.asarray(transfer_correct, dtype=float)
    s = np.asarray(scratch_correct, dtype=float)
    if t.shape != s.shape or t.ndim != 2 or t.size == 0:
        raise ValueError(f"expected two (seeds, test) arrays of one shape, got {t.shape} and "
                         f"{s.shape}")
    diff = t - s  # (seeds, n_test)
    k, n = diff.shape
    gain = float(diff.mean())
    # the test level never below 3 / n^2: with few or no samples on which the arms differ,
    # the rate of such samples is only known to be below ~3 / n (the rule of three, Hanley &
    # Lippman-Hand 1983), so an interval of width 0 would claim what n samples cannot show
    v_test = max(float(diff.mean(axis=0).var(ddof=1)) / n if n > 1 else 0.0, 3.0 / n ** 2)
    v_seed = float(diff.mean(axis=1).var(ddof=1)) / k if k > 1 else 0.0
    var = v_test + v_seed
    se = float(np.sqrt(var))
    terms = (v_test ** 2 / (n - 1) if n > 1 else 0.0) + (v_seed ** 2 / (k - 1) if k > 1 else 0.0)
    df = var ** 2 / terms if terms > 0 else float(max(n - 1, 1))
    q = float(scipy.stats.t.ppf(0.5 + level / 2, df))
    mde = (q + float(scipy.stats.t.ppf(POWER, df))) * se
    return Gain(gain, gain - q * se, gain + q * se, se, float(df), n, k, float(mde), level)


def stack_correctness(runs_by_seed) -> np.ndarray:
    """One arm's per-seed test correctness, every test sample at its own column.

    Parameters
    ----------
    runs_by_seed : sequence of sequence of dict
        Per seed, the run metrics of that seed (one run; or one per cross-validation fold),
        each with ``test_correct`` (n_i,) and ``test_index`` (n_i,): the positions of its
        test samples (runs stored before ``test_index`` existed: ``0..n_i-1``).

    Returns
    -------
    ndarray of shape (n_seeds, n_test)
        Row ``s``: seed ``s``'s correctness ordered by test position, so that two arms run on
        the same splits line up sample by sample (and, with cross-validation, repetitions with
        different folds line up too: every sample is tested once per repetition).

    Raises
    ------
    ValueError
        When the seeds did not test the same samples.
    """
    rows, where = [], None
    for runs in runs_by_seed:
        idx = np.concatenate([np.asarray(m.get("test_index", np.arange(len(m["test_correct"]))))
                              for m in runs])
        correct = np.concatenate([np.asarray(m["test_correct"], dtype=float) for m in runs])
        order = np.argsort(idx, kind="stable")
        if where is None:
            where = idx[order]
        elif not np.array_equal(where, idx[order]):
            raise ValueError("expected every seed to test the same samples")
        rows.append(correct[order])
    return np.stack(rows)


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


N_BOOT = 2000
MIN_BOOT_ITEMS = 5  # items (targets, cells) with a value needed for an interval over them


def bootstrap_interval(values_fn, n_items: int, seed: int = 0) -> tuple[float, float, int]:
    """95 % percentile bootstrap of a statistic of ``n_items`` resampled items whose value can
    be undefined on a draw (precision without a flagged pair): those draws are dropped and
    counted, so the interval is conditional on the statistic existing.

    Returns
    -------
    lo, hi : float
        NaN when every draw was undefined.
    dropped : int
        Draws (of :data:`N_BOOT`) on which the statistic was undefined.
    """
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(N_BOOT):
        v = values_fn(rng.integers(0, n_items, n_items))
        if v == v:
            stats.append(v)
    dropped = N_BOOT - len(stats)
    if not stats:
        return float("nan"), float("nan"), dropped
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi), dropped


def mean_interval(v, seed: int = 0) -> tuple[float, float, float, int]:
    """Mean over targets (NaN-skipping) and its 95 % BCa bootstrap interval over the targets
    with a value (``scipy.stats.bootstrap``; Efron & Tibshirani, "An Introduction to the
    Bootstrap", 1993, ch. 14), or no interval (NaN) with fewer than :data:`MIN_BOOT_ITEMS`:
    resampling 2-4 values gives a handful of distinct means, not a 95 % interval.

    Returns
    -------
    mean, lo, hi : float
    n : int
        Targets with a value.
    """
    import warnings

    import scipy.stats

    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(v.mean())
    if len(v) < MIN_BOOT_ITEMS:
        return mean, float("nan"), float("nan"), len(v)
    if np.ptp(v) == 0:
        return mean, mean, mean, len(v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa's degenerate-data warning: handled below
        ci = scipy.stats.bootstrap((v,), np.mean, n_resamples=N_BOOT, confidence_level=0.95,
                                   method="BCa", random_state=seed).confidence_interval
    lo, hi = float(ci.low), float(ci.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):  # BCa undefined: the percentile interval
        lo, hi, _ = bootstrap_interval(lambda idx: float(v[idx].mean()), len(v), seed)
    return mean, lo, hi, len(v)
