"""LogME with a float32 Gram matrix (the default on large inputs) ranks candidate feature sets
exactly as float64 does and agrees with it to about 1e-6 relative.

Candidates: generated class-conditional Gaussians of several sizes, spectra (power-law decay
0.5, 1, 2), separations and offsets (post-ReLU-like features are far from centred); and real
features made offline: digits pixels (raw, rescaled, offset), random ReLU features and random
projections of them (rank-deficient: 64 pixels projected to more dimensions)."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from transferscope.metrics import score
from transferscope.metrics.logme import resolve_gram_dtype

AGREE = 2e-6  # float32 vs float64, relative (observed <= 3e-7 on these inputs)


def _generated(n, d, c, decay, sep, offset, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % c)
    lam = np.arange(1, d + 1) ** -decay
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    mu = (rng.standard_normal((c, d)) * sep / np.sqrt(2 * d) * np.sqrt(lam)) @ q.T
    x = (rng.standard_normal((n, d)) * np.sqrt(lam)) @ q.T + mu[y]
    return x + offset * np.abs(rng.standard_normal(d)), y


def _ranks_and_agreement(candidates, y):
    f64 = np.array([score("logme", x, y, gram_dtype="float64") for x in candidates])
    f32 = np.array([score("logme", x, y, gram_dtype="float32") for x in candidates])
    np.testing.assert_allclose(f32, f64, rtol=AGREE)
    assert list(np.argsort(f32)) == list(np.argsort(f64))


@pytest.mark.parametrize("decay", [0.5, 1.0, 2.0])
@pytest.mark.parametrize(("n", "d", "c"), [(3000, 128, 10), (4000, 192, 20)])
def test_generated_spectra_rank_identically(n, d, c, decay):
    _, y = _generated(n, d, c, decay, 1.0, 0.0)
    candidates = [_generated(n, d, c, decay, sep, off)[0]
                  for sep in (0.5, 1.5, 3.0) for off in (0.0, 5.0)]
    _ranks_and_agreement(candidates, y)


def test_digits_features_rank_identically():
    data = load_digits()
    px, y = data.data, data.target
    rng = np.random.default_rng(0)
    candidates = [px, px / 16.0, px + 100.0]
    for width in (128, 384):
        w = rng.standard_normal((64, width)) / 8
        candidates += [np.maximum(px @ w, 0), px @ w]  # ReLU features; a rank-64 projection
    _ranks_and_agreement(candidates, y)


def test_auto_uses_float32_only_where_it_saves_time():
    assert resolve_gram_dtype("auto", 2000, 512) == "float64"  # S1
    assert resolve_gram_dtype("auto", 10000, 1024) == "float32"  # S2
    assert resolve_gram_dtype("float64", 50000, 2048) == "float64"


@pytest.mark.parametrize("n", [5, 130, 300])  # 1, 3 and 5 blocks of reflectors
def test_eigh_projections_equal_eigenvectors(monkeypatch, n):
    """The tridiagonal route (used from D = 1000 on) gives eigenvalues and V^T rhs without
    forming V; forced here on small matrices."""
    from transferscope.metrics import _stats

    monkeypatch.setattr(_stats, "TRIDIAGONAL_MIN_SIZE", 3)
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n + 7, n))
    gram, rhs = a.T @ a, rng.standard_normal((n, 2))
    w, proj = _stats.eigh_projections(gram, rhs)
    w_ref, v = np.linalg.eigh(gram)
    np.testing.assert_allclose(w, w_ref, rtol=1e-10, atol=1e-10 * w_ref.max())
    # eigenvectors have arbitrary signs: compare squared projections
    np.testing.assert_allclose(proj**2, (v.T @ rhs) ** 2, atol=1e-9 * (rhs**2).sum())


def test_logme_is_the_same_through_either_eigen_route(monkeypatch):
    from transferscope.metrics import _stats

    x, y = _generated(1500, 120, 6, 1.0, 2.0, 3.0)
    direct = score("logme", x, y)
    monkeypatch.setattr(_stats, "TRIDIAGONAL_MIN_SIZE", 3)
    assert score("logme", x, y) == pytest.approx(direct, rel=1e-10)
