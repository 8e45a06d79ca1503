"""Properties every metric must have: finite, invariant to sample order and to label names,
deterministic under a seed, and higher on more separable data."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import blobs, probs_for
from transferscope.metrics import list_metrics, score

FEATURE_METRICS = [m.name for m in list_metrics() if m.inputs == "features"]
PROB_METRICS = [m.name for m in list_metrics() if m.inputs != "features"]
STOCHASTIC = {m.name for m in list_metrics() if m.stochastic}
ORDER_FREE = [m for m in FEATURE_METRICS if m not in STOCHASTIC]


def run(name, x, y, p, **kw):
    return score(name, x, y, source_probs=p, **kw)


data = st.tuples(
    st.integers(40, 90),  # n
    st.integers(3, 9),  # d
    st.integers(2, 4),  # classes
    st.floats(0.5, 4.0),  # separation
    st.integers(0, 2**16),  # seed
)


def sample(params):
    n, d, c, sep, seed = params
    x, y = blobs(n, d, c, sep, seed)
    return x, y, probs_for(y, seed=seed), np.random.default_rng(seed)


@settings(max_examples=15, deadline=None)
@given(data)
def test_finite_and_order_invariant(params):
    x, y, p, rng = sample(params)
    n = len(y)
    perm = rng.permutation(n)
    for name in ORDER_FREE + PROB_METRICS:
        a = run(name, x, y, p)
        b = run(name, x[perm], y[perm], p[perm])
        assert np.isfinite(a), name
        assert a == pytest.approx(b, rel=1e-7, abs=1e-9), name


@settings(max_examples=15, deadline=None)
@given(data)
def test_label_permutation_invariant(params):
    x, y, p, rng = sample(params)
    relabel = rng.permutation(y.max() + 1) * 7 + 3
    for name in ORDER_FREE + PROB_METRICS:
        assert run(name, x, y, p) == pytest.approx(run(name, x, relabel[y], p), rel=1e-9,
                                                   abs=1e-12), name


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_deterministic_under_seed(name):
    x, y = blobs(120, 6, 3, 2.0, 1)
    assert run(name, x, y, None, seed=3) == run(name, x, y, None, seed=3)


@pytest.mark.parametrize("name", FEATURE_METRICS + PROB_METRICS)
def test_more_separable_scores_higher(name):
    x_easy, y = blobs(150, 8, 3, sep=5.0, seed=4)
    x_hard, _ = blobs(150, 8, 3, sep=0.5, seed=4)
    p_easy, p_hard = probs_for(y, strength=4.0, seed=4), probs_for(y, strength=0.2, seed=4)
    assert run(name, x_easy, y, p_easy) > run(name, x_hard, y, p_hard)
