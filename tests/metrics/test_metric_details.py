"""Checks of individual metrics against independent oracles and their documented choices."""

import numpy as np
import pytest
import scipy.stats

from tests.conftest import blobs, probs_for
from transferscope.metrics import get_metric, list_metrics, score
from transferscope.metrics.logme import logme_from_kernel
from transferscope.validation import check_labels


def test_registry_lists_every_metric_with_a_description():
    names = {m.name for m in list_metrics()}
    assert names == {"logme", "leep", "nce", "hscore", "hscore_reg", "nleep", "sfda", "gbc",
                     "transrate", "parc", "knn", "linear_probe"}
    for m in list_metrics():
        assert m.summary and m.func.__doc__
        assert get_metric(m.name) is m


def test_logme_evidence_is_the_gaussian_marginal_likelihood():
    """Oracle: log N(y | 0, I/beta + F F^T/alpha) / N at the returned alpha, beta - with N < D,
    where the reference drops the D - N zero eigenvalues from log|A|. Like the reference, the
    score evaluates m and the residual at the previous iterate (the iteration stops at a 1e-3
    relative change), hence the 1e-3 tolerance; dropping the zero eigenvalues would be off by
    (D - N) log(alpha) / 2N, far more."""
    x, y = blobs(25, 40, 2, 2.0, 3)
    t = np.eye(2)[y]
    fit = logme_from_kernel(x, t)
    for j in range(2):
        cov = np.eye(25) / fit.beta[j] + x @ x.T / fit.alpha[j]
        oracle = scipy.stats.multivariate_normal(np.zeros(25), cov).logpdf(t[:, j]) / 25
        assert fit.evidence[j] == pytest.approx(oracle, rel=1e-3)
        dropped = (40 - 25) * np.log(fit.alpha[j]) / 2 / 25
        assert abs(dropped) > 100 * abs(fit.evidence[j] - oracle)


def test_logme_kernel_and_gram_paths_agree():
    x, y = blobs(60, 59, 3, 2.0, 0)  # N > D: Gram path
    a = score("logme", x, y)
    lab = check_labels(y, 60)
    b = logme_from_kernel(x, np.eye(3)[lab.codes]).score
    assert a == pytest.approx(b, rel=1e-7)


def test_sfda_does_not_mutate_input():
    x, y = blobs(90, 5, 3, 2.0, 0)
    before = x.copy()
    score("sfda", x, y)
    assert np.array_equal(x, before)


def test_nleep_log_and_no_log_variants():
    x, y = blobs(120, 6, 3, 2.0, 1)
    with_log = score("nleep", x, y)
    without = score("nleep", x, y, log=False)
    assert with_log < 0 < without <= 1
    assert with_log <= np.log(without) + 1e-12  # Jensen: mean log <= log mean


def test_parc_subsample_bounds_memory_and_is_seeded():
    x, y = blobs(600, 10, 3, 2.0, 2)
    full = score("parc", x, y)
    sub = score("parc", x, y, max_samples=200)
    assert sub == score("parc", x, y, max_samples=200)
    assert sub != score("parc", x, y, max_samples=200, seed=5)
    assert sub == pytest.approx(full, rel=0.5)


def test_leep_and_nce_accept_hard_predictions():
    x, y = blobs(90, 5, 3, 2.0, 0)
    p = probs_for(y)
    assert score("nce", None, y, source_probs=p) == pytest.approx(
        get_metric("nce").func(p.argmax(1), y))


def test_nce_perfect_source_is_zero():
    y = np.arange(60) % 3
    assert get_metric("nce").func(y * 2 + 1, y) == pytest.approx(0.0, abs=1e-12)


def test_knn_and_probe_are_accuracies():
    x, y = blobs(90, 5, 3, 8.0, 0)
    for m in ("knn", "linear_probe"):
        assert 0.95 <= score(m, x, y) <= 1.0


def test_gbc_perfectly_separated_is_near_zero():
    x, y = blobs(90, 5, 3, 50.0, 0)
    assert -1e-6 < score("gbc", x, y) <= 0


@pytest.mark.parametrize("name", ["logme", "hscore", "hscore_reg", "linear_probe", "sfda",
                                  "transrate", "knn"])
def test_torch_path_matches_numpy(name):
    x, y = blobs(200, 16, 4, 2.0, 0)
    assert score(name, x, y, device="cpu") == pytest.approx(score(name, x, y), rel=1e-8)
