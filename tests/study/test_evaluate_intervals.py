"""study evaluate's intervals: BCa over targets that holds its level, none over too few
targets, and precision/recall draws that are undefined are counted, not silently dropped."""

import importlib

import numpy as np
import pytest

ev = importlib.import_module("transferscope.study.evaluate")  # the package exports the function
verdict = importlib.import_module("transferscope.verdict")


def test_mean_interval_over_targets_covers_at_its_level():
    rng = np.random.default_rng(0)
    covered = 0
    trials = 200
    for _ in range(trials):
        values = rng.normal(0.3, 0.2, size=20)  # 20 targets' tau, true mean 0.3
        _, lo, hi, n = verdict.mean_interval(values, seed=int(rng.integers(1 << 30)))
        assert n == 20
        covered += lo <= 0.3 <= hi
    assert 0.88 <= covered / trials <= 0.99  # 95 % nominal; binomial sd ~0.015


def test_no_interval_over_fewer_than_min_targets_and_nan_targets_are_not_counted():
    mean, lo, hi, n = verdict.mean_interval([0.1, np.nan, 0.5, 0.3, np.nan])
    assert n == 3 and mean == np.mean([0.1, 0.5, 0.3])
    assert np.isnan(lo) and np.isnan(hi)
    mean, lo, hi, n = verdict.mean_interval([0.2] * 6)  # no spread: the interval is the point
    assert n == 6 and lo == hi == mean == pytest.approx(0.2)


def test_undefined_bootstrap_draws_are_counted():
    n = 10
    flags = np.zeros(n, bool)
    flags[0] = True  # precision is undefined on draws that miss pair 0
    actual = np.zeros(n, bool)
    actual[[0, 1]] = True
    lo, hi, dropped = verdict.bootstrap_interval(
        lambda idx: ev._prf(flags[idx], actual[idx])[0], n, seed=3)
    expected = verdict.N_BOOT * (1 - 1 / n) ** n  # P(pair 0 never drawn) = 0.9^10 = 0.35
    assert abs(dropped - expected) < 0.05 * verdict.N_BOOT
    assert lo == hi == 1.0  # whenever defined, the one flagged pair is a true NEGATIVE
