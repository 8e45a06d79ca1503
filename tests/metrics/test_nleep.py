"""NLEEP's batched torch EM against scikit-learn's GaussianMixture, and its block-wise scoring.

(The S1 reference value itself is checked in test_reference.py.)"""

import sys

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from tests.conftest import blobs
from transferscope import InputError
from transferscope.metrics import score
from transferscope.metrics.nleep import FullGaussianMixture, nleep_from_posteriors

nleep_module = sys.modules["transferscope.metrics.nleep"]  # the package exports the function


@pytest.mark.parametrize(("n", "d", "c", "k"), [(300, 6, 3, 15), (240, 12, 4, 8)])
def test_torch_em_equals_sklearn(n, d, c, k):
    x, _ = blobs(n, d, c, 3.0, seed=n)
    x = x - x.mean(axis=0)
    ours = FullGaussianMixture(k, seed=3, max_iter=100).fit(x)
    ref = GaussianMixture(n_components=k, random_state=np.random.RandomState(3)).fit(x)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.weights_.numpy(), ref.weights_, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(ours.means_.numpy(), ref.means_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(x).numpy(), ref.predict_proba(x), atol=1e-7)


def _dense_nleep(theta, codes, n_classes, log):
    joint = np.zeros((n_classes, theta.shape[1]))
    np.add.at(joint, codes, theta)
    joint /= len(theta)
    marginal = joint.sum(axis=0)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    per_sample = np.einsum("ij,ij->i", theta, cond[codes])
    return np.mean(np.log(per_sample)) if log else np.mean(per_sample)


@pytest.mark.parametrize("log", [True, False])
@pytest.mark.parametrize("budget", [0, 2**23])  # 0: the second pass recomputes the posteriors
def test_blockwise_scoring_equals_dense_formula(monkeypatch, log, budget):
    import torch

    rng = np.random.default_rng(0)
    theta = rng.dirichlet(np.full(9, 0.3), size=101)
    theta[theta < 1e-3] = 0.0  # sparse rows, as a peaked mixture gives
    theta /= theta.sum(axis=1, keepdims=True)
    codes = rng.integers(0, 4, 101)
    monkeypatch.setattr(nleep_module, "BLOCK_ELEMENTS", 7 * 9)  # blocks of 7 rows
    monkeypatch.setattr(nleep_module, "SPARSE_BUDGET", budget)
    got = nleep_from_posteriors(lambda a, b: torch.from_numpy(theta[a:b]), 101, codes, 4, 9,
                                log=log)
    assert got == pytest.approx(_dense_nleep(theta, codes, 4, log), rel=1e-12)


def test_small_blocks_do_not_change_the_score(monkeypatch):
    x, y = blobs(150, 6, 3, 2.0, 1)
    whole = score("nleep", x, y)
    monkeypatch.setattr(nleep_module, "BLOCK_ELEMENTS", 64)
    assert score("nleep", x, y) == pytest.approx(whole, rel=1e-12)


def test_other_covariance_types_run_through_sklearn():
    x, y = blobs(150, 6, 3, 2.0, 1)
    for kind in ("diag", "spherical", "tied"):
        assert np.isfinite(score("nleep", x, y, covariance_type=kind))


@pytest.mark.parametrize(("options", "match"), [
    ({"covariance_type": "ful"}, "covariance_type"),
    ({"components_per_class": 0}, "components_per_class"),
    ({"variance": 1.5}, "variance"),
    ({"max_iter": 0}, "max_iter"),
    ({"components_per_class": 40}, "at least 120 samples"),
])
def test_bad_options_are_one_line_input_errors(options, match):
    x, y = blobs(90, 6, 3, 2.0, 1)
    with pytest.raises(InputError, match=match) as err:
        score("nleep", x, y, **options)
    assert "\n" not in str(err.value)
