"""D > N (raw inputs, small targets): the metrics that take the dual (N x N) form or rotate the
rows onto their N-dimensional span give the same value as the direct D x D computation.

Speed is measured in bench/metrics.py (size "R"), not here."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits

from transferscope.metrics import score
from transferscope.metrics._stats import class_stats, row_space
from transferscope.metrics.hscore import hscore_from_stats, hscore_reg_from_stats
from transferscope.metrics.logme import _logme_gram_path
from transferscope.metrics.sfda import _sfda
from transferscope.metrics.transrate import _transrate
from transferscope.validation import check_features, check_labels


def _gaussian(n=120, d=400, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    x = 0.3 * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d)) + 3.0
    return x, y


def _digits(width=320, relu=False, n=160, seed=0):
    """Raw digits pixels (offline, bundled with scikit-learn) through a random projection to
    ``width`` > n dimensions: rank <= 64 (linear) or full rank (ReLU random features)."""
    rng = np.random.default_rng(seed)
    data = load_digits()
    idx = rng.choice(len(data.target), n, replace=False)
    x = data.data[idx] @ (rng.standard_normal((64, width)) / 8)
    return (np.maximum(x, 0) if relu else x), data.target[idx]


WIDE = {
    "gaussian 120x400": _gaussian,
    "digits projection 160x320": lambda: _digits(),
    "digits relu 160x320": lambda: _digits(relu=True),
}


def _direct(name, x, lab):
    if name == "logme":
        return _logme_gram_path(x, lab, False, "float64", None)[0].score
    if name == "hscore":
        return hscore_from_stats(class_stats(x, lab.codes, lab.n_classes))
    if name == "hscore_reg":
        return hscore_reg_from_stats(class_stats(x, lab.codes, lab.n_classes, moments=True))
    if name == "transrate":
        return _transrate(x, lab, 1e-4, None, dual=False)
    return _sfda(np.array(x), lab, None)


@pytest.mark.parametrize("case", list(WIDE))
@pytest.mark.parametrize("name", ["logme", "hscore", "hscore_reg", "transrate", "sfda"])
def test_reduced_path_equals_direct(name, case):
    x, y = WIDE[case]()
    assert x.shape[1] > x.shape[0]
    x, lab = check_features(x), check_labels(y, len(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hscore warns that D >= N saturates it
        reduced = score(name, x, y)
    assert reduced == pytest.approx(_direct(name, x, lab), rel=1e-8, abs=1e-12)


def test_row_space_is_an_exact_rotation():
    x, _ = _gaussian()
    coords, basis = row_space(x)
    assert coords.shape == (120, 120) and basis.shape == (400, 120)
    np.testing.assert_allclose(coords @ basis.T, x, rtol=0, atol=1e-12 * np.abs(x).max())
    np.testing.assert_allclose(basis.T @ basis, np.eye(120), atol=1e-13)
    np.testing.assert_allclose(coords @ coords.T, x @ x.T, rtol=1e-12)


def test_sfda_wide_case_is_not_saturated():
    """The rank-64 projection keeps SFDA away from 1, so the equality above is informative."""
    x, y = _digits()
    assert 0.5 < score("sfda", x, y) < 0.99
