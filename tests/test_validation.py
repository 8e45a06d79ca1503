"""Every bad input gets a one-line InputError naming what was expected and what came."""

import numpy as np
import pytest

from tests.conftest import blobs, probs_for
from transferscope import InputError, TransferabilityWarning
from transferscope.metrics import score
from transferscope.validation import check_labels, check_source_probs


def one_line_error(fn, *match):
    with pytest.raises(InputError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    assert "Expected" in msg or "Unknown" in msg or "needs" in msg or "option" in msg
    for m in match:
        assert m in msg, msg
    return msg


X, Y = blobs()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features(bad):
    x = X.copy()
    x[7, 2] = bad
    one_line_error(lambda: score("logme", x, Y), "finite", "row 7")


def test_one_dimensional_features():
    one_line_error(lambda: score("logme", X[:, 0], Y), "2-D", "reshape")


def test_three_dimensional_features():
    one_line_error(lambda: score("logme", X.reshape(len(X), 2, 4), Y), "2-D", "(150, 2, 4)")


def test_string_features():
    one_line_error(lambda: score("logme", X.astype(str), Y), "numeric")


def test_length_mismatch():
    one_line_error(lambda: score("hscore", X, Y[:-3]), "150", "147")


def test_single_class():
    one_line_error(lambda: score("logme", X, np.zeros(len(X))), "at least 2 classes")


def test_class_with_one_sample_is_rejected_where_class_statistics_are_needed():
    y = Y.copy()
    y[0] = 99
    one_line_error(lambda: score("sfda", X, y), "99", "(1)")
    one_line_error(lambda: score("gbc", X, y), "at least 2 samples")


def test_class_with_one_sample_is_fine_for_logme():
    y = Y.copy()
    y[0] = 99
    assert np.isfinite(score("logme", X, y))


def test_string_and_sparse_labels_are_mapped_not_rejected():
    names = np.array(["cat", "dog", "emu"])[Y]
    sparse = np.array([3, 1000, 2**62])[Y]
    base = score("logme", X, Y)
    assert score("logme", X, names) == pytest.approx(base, rel=1e-12)
    assert score("logme", X, sparse) == pytest.approx(base, rel=1e-12)


def test_integer_overflow_in_labels():
    # huge int64 labels: no array of size max(label) is allocated
    huge = np.array([np.iinfo(np.int64).max, np.iinfo(np.int64).min, 0])[Y]
    assert np.isfinite(score("nce", None, huge, source_probs=probs_for(Y)))
    # floats beyond 2**53 cannot hold an exact integer label
    one_line_error(lambda: score("logme", X, Y.astype(float) * 1e17), "2**53")


def test_parc_needs_three_dimensions():
    one_line_error(lambda: score("parc", X[:, :2], Y), "at least 3 feature dimensions")


def test_non_integer_float_labels():
    one_line_error(lambda: score("logme", X, Y + 0.5), "regression=True")


def test_mixed_type_labels():
    y = np.array([1, "a", 2] * 50, dtype=object)
    one_line_error(lambda: score("logme", X, y), "one type")


def test_one_hot_labels_hint_argmax():
    one_line_error(lambda: score("logme", X, np.eye(3)[Y]), "argmax")


def test_column_labels_are_flattened():
    assert score("logme", X, Y[:, None]) == pytest.approx(score("logme", X, Y))


def test_non_contiguous_and_float32_features():
    wide = np.repeat(X, 2, axis=1)[:, ::2]  # a strided view
    assert not wide.flags["C_CONTIGUOUS"]
    assert score("hscore", wide, Y) == pytest.approx(score("hscore", X, Y), rel=1e-12)
    assert score("logme", X.astype(np.float32), Y) == pytest.approx(
        score("logme", X, Y), rel=1e-5)


def test_constant_features():
    one_line_error(lambda: score("logme", np.ones((20, 4)), np.arange(20) % 2), "constant")
    x = X.copy()
    x[:, 3] = 7.0  # one constant column is kept and handled
    for m in ("logme", "hscore", "hscore_reg", "gbc", "sfda", "transrate", "parc"):
        assert np.isfinite(score(m, x, Y)), m


def test_more_features_than_samples():
    x, y = blobs(n=30, d=60)
    with pytest.warns(TransferabilityWarning, match="60 features >= 30 samples"):
        assert np.isfinite(score("hscore", x, y))
    for m in ("logme", "hscore_reg", "sfda", "transrate", "gbc"):
        assert np.isfinite(score(m, x, y)), m


def test_probabilities_must_sum_to_one():
    p = probs_for(Y)
    one_line_error(lambda: score("leep", None, Y, source_probs=p * 1.1), "sum to 1")
    one_line_error(lambda: score("leep", None, Y, source_probs=np.log(p)), "logits")
    nearly = p * (1 + 1e-7)  # float32-like rounding is renormalised
    assert np.allclose(check_source_probs(nearly, len(Y)).sum(axis=1), 1.0)


def test_probabilities_row_count():
    one_line_error(lambda: score("leep", None, Y[:-1], source_probs=probs_for(Y)), "150")


def test_missing_inputs_and_unknown_names():
    one_line_error(lambda: score("leep", X, Y), "source_probs")
    one_line_error(lambda: score("logmee", X, Y), "did you mean 'logme'")
    one_line_error(lambda: score("logme", X, Y, regresion=True), "did you mean 'regression'")
    one_line_error(lambda: score("gbc", X, Y, gaussian_type="full"), "diagonal")


def test_nan_labels():
    y = Y.astype(float)
    y[3] = np.nan
    one_line_error(lambda: score("logme", X, y), "NaN")


def test_regression_targets():
    rng = np.random.default_rng(0)
    t = X @ rng.standard_normal(X.shape[1])
    good = score("logme", X, t, regression=True)
    bad = score("logme", X, rng.standard_normal(len(X)), regression=True)
    assert good > bad
    one_line_error(lambda: score("logme", X, t[:, None] * np.nan, regression=True), "finite")


def test_check_labels_reports_counts():
    lab = check_labels(["b", "a", "b"], 3)
    assert lab.classes.tolist() == ["a", "b"]
    assert lab.codes.tolist() == [1, 0, 1]
    assert lab.counts.tolist() == [1, 2]
