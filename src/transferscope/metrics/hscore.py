"""H-score and its shrinkage-regularised form.

H-score: Bao, Li, Huang, Yang, Zhao. "An Information-Theoretic Approach to Transferability in
Task Transfer Learning", ICIP 2019: ``H = tr(cov(f)^+ cov(E[f | y]))``.

Shrinkage H-score: Ibrahim, Ponomareva, Mazumder. "Newer is not always better: Rethinking
transferability metrics, their peculiarities, stability and performance", ECML-PKDD 2022:
``H_alpha = tr(cov_alpha(f)^-1 (1 - alpha) cov(E[f | y]))`` with the Ledoit-Wolf estimate
``cov_alpha = (1 - alpha) S + alpha tr(S)/D I`` and its data-driven shrinkage alpha.

Both follow the Transfer-Learning-Library conventions (np.cov with ddof=1 for the class-mean
covariance, pseudo-inverse cut-off 1e-15 relative) and need only the Gram matrix and class sums,
so they run on streamed chunks too. ``cov(E[f|y])`` is ``sum_c n_c (mu_c - mu)(mu_c - mu)^T /
(N - 1)``, never the N x D matrix of repeated class means that the reference builds, and the
trace ``sum_c n_c d_c^T S^+ d_c`` comes from one Cholesky solve with the C class-mean offsets
(D^3 / 3 flops). Only when the covariance is singular or nearly so (reciprocal condition below
1e-12, e.g. D >= N) is the pseudo-inverse taken, in its eigenbasis with the reference's 1e-15
relative cut-off.

With D >= N the covariance is singular: the plain H-score then saturates (a warning says so);
the shrinkage form stays well defined.

D > N (raw inputs, small targets): both scores are computed on the exact rotation of the rows
onto their N-dimensional span (:func:`~transferscope.metrics._stats.row_space`, a thin QR,
O(N^2 D)) instead of the D x D covariance (O(N D^2 + D^3)). The H-score is invariant to it:
``tr(cov^+ B)`` with both matrices living in that span. The shrinkage H-score is too, given the
original D: its Ledoit-Wolf target ``tr(S) / D I`` fills the D - N dimensions where the class
means have no component, and its shrinkage depends on the data only through rotation invariants
(traces, Frobenius norms, |x - mu|^4) and on D, which is passed through. Measured equal to the
direct computation to 1e-15 relative (``tests/metrics/test_wide.py``).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.linalg import lapack

from transferscope.metrics._registry import metric
from transferscope.metrics._stats import ClassStats, class_stats, row_space, symmetric_eigh
from transferscope.validation import warn_if_wide

PINV_RCOND = 1e-15
CHOLESKY_MIN_RCOND = 1e-12


def _trace_pinv_product(cov, diff, weights, *, device=None) -> float:
    """tr(cov^+ B) for B = sum_c weights_c diff_c diff_c^T (cov symmetric PSD, D x D)."""
    if device is None:
        chol, info = lapack.dpotrf(cov, lower=1, clean=1)
        if info == 0:
            rcond, _ = lapack.dpocon(chol, float(np.abs(cov).sum(axis=0).max()), uplo="L")
            if rcond > CHOLESKY_MIN_RCOND:
                half = scipy.linalg.solve_triangular(chol, diff.T, lower=True)  # L^-1 d_c
                return float(np.einsum("ij,ij->j", half, half) @ weights)
    eigvals, eigvecs = symmetric_eigh(cov, device=device)
    cutoff = PINV_RCOND * np.abs(eigvals).max()
    inv = np.where(np.abs(eigvals) > cutoff, 1.0 / np.where(eigvals == 0, 1, eigvals), 0.0)
    proj = diff @ eigvecs  # (C, D)
    return float(((proj * proj) @ inv) @ weights)


def _class_mean_offsets(stats: ClassStats):
    diff = stats.class_sums / np.maximum(stats.counts, 1)[:, None] - stats.sum / stats.n
    return diff, stats.counts.astype(np.float64)


def hscore_from_stats(stats: ClassStats) -> float:
    """H-score (Bao et al., ICIP 2019) from accumulated statistics: ``tr(cov(f)^+ cov(E[f|y]))``.

    Both covariances use ddof=1, as the Transfer-Learning-Library reference does; the trace
    comes from a Cholesky solve, or from the pseudo-inverse when the covariance is (nearly)
    singular (see the module docstring).

    Parameters
    ----------
    stats : ClassStats
        Counts, class sums and Gram matrix of features of shape (n_samples, n_features), with
        n_samples >= 2.

    Returns
    -------
    float
    """
    n = stats.n
    diff, counts = _class_mean_offsets(stats)
    return _trace_pinv_product(stats.scatter() / (n - 1), diff, counts / (n - 1),
                               device=stats.device)


def ledoit_wolf_shrinkage(stats: ClassStats, n_features: int | None = None) -> float:
    """The Ledoit-Wolf shrinkage of the empirical covariance, from accumulated statistics.

    Same estimator as ``sklearn.covariance.ledoit_wolf_shrinkage``, computed from the centred
    scatter matrix and the centred fourth moment sum_k ||x_k - mu||^4 instead of a second pass.

    Parameters
    ----------
    stats : ClassStats
        Accumulated with ``moments=True``.
    n_features : int, optional
        The features' dimension D when ``stats`` holds rotated coordinates of fewer
        dimensions (:func:`~transferscope.metrics._stats.row_space`); default
        ``stats.n_features``.

    Returns
    -------
    float
        The shrinkage in [0, 1].
    """
    n, p = stats.n, n_features or stats.n_features
    scatter = stats.scatter()
    emp_trace = float(np.trace(scatter)) / n
    mu = emp_trace / p
    delta_ = float(np.sum(scatter * scatter)) / n**2
    beta_ = stats.centered_fourth_moment()
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * emp_trace + p * mu**2) / p
    beta = min(beta, delta)
    return 0.0 if beta == 0 else beta / delta


def hscore_reg_from_stats(stats: ClassStats, n_features: int | None = None) -> float:
    """Shrinkage H-score (Ibrahim et al., ECML-PKDD 2022) from accumulated statistics:
    ``(1 - alpha) tr(cov_alpha(f)^-1 cov(E[f|y]))`` with the Ledoit-Wolf covariance
    ``cov_alpha`` and shrinkage ``alpha`` (:func:`ledoit_wolf_shrinkage`).

    Parameters
    ----------
    stats : ClassStats
        Statistics of features of shape (n_samples, n_features), n_samples >= 2, accumulated
        with ``moments=True`` (the shrinkage needs the fourth moments).
    n_features : int, optional
        The original dimension D when ``stats`` holds the rows' coordinates in their span
        (D > N); the shrinkage target ``tr(S) / D`` and the shrinkage use it.

    Returns
    -------
    float
    """
    n, q = stats.n, stats.n_features
    p = n_features or q
    emp_cov = stats.scatter() / n
    alpha = ledoit_wolf_shrinkage(stats, p)
    shrunk = (1.0 - alpha) * emp_cov
    shrunk.flat[:: q + 1] += alpha * float(np.trace(emp_cov)) / p
    diff, counts = _class_mean_offsets(stats)
    return (1.0 - alpha) * _trace_pinv_product(shrunk, diff, counts / (n - 1),
                                               device=stats.device)


@metric(
    "hscore",
    "H-score: tr(cov(f)^+ cov(E[f|y])), class separation in whitened feature space",
    reference="hscore.tllib",
)
def hscore(features, labels, *, gram_dtype="float64", device=None):
    """H-score (Bao et al., ICIP 2019): ``tr(cov(f)^+ cov(E[f|y]))``, higher = better separated.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Target features from the source model; with n_features >= n_samples the covariance
        is singular and the score saturates (a warning says so; prefer ``hscore_reg``). With
        n_features > n_samples it is computed on the rows' N-dimensional coordinates (an
        exact rotation; the value is unchanged).
    labels : array-like of shape (n_samples,)
        Class labels (any sortable values).
    gram_dtype : {"float64", "float32"}
        Precision of the Gram matrix ("float32": faster, about 1e-9 relative error).
    device : str, optional
        A torch device ("cuda") for the Gram matrix and eigensolve.

    Returns
    -------
    float
    """
    n, d = features.shape
    warn_if_wide("hscore", n, d, "use 'hscore_reg' or reduce the features with PCA")
    if d > n:
        features, _ = row_space(features)
    stats = class_stats(features, labels.codes, labels.n_classes,
                        gram_dtype=gram_dtype, device=device)
    return hscore_from_stats(stats)


@metric(
    "hscore_reg",
    "Shrinkage H-score: H-score with a Ledoit-Wolf covariance (stable when D is large)",
    reference="hscore_reg.tllib",
)
def hscore_reg(features, labels, *, gram_dtype="float64", device=None):
    """Shrinkage H-score (Ibrahim et al., ECML-PKDD 2022): the H-score with a Ledoit-Wolf
    covariance, well defined when n_features >= n_samples; higher = better separated.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Target features from the source model. With n_features > n_samples the score is
        computed on the rows' N-dimensional coordinates (an exact rotation, with the
        shrinkage target of the original dimension; the value is unchanged).
    labels : array-like of shape (n_samples,)
        Class labels (any sortable values).
    gram_dtype : {"float64", "float32"}
        Precision of the Gram matrix ("float32": faster, about 1e-9 relative error).
    device : str, optional
        A torch device ("cuda") for the Gram matrix and eigensolve.

    Returns
    -------
    float
    """
    n, d = features.shape
    if d > n:
        features, _ = row_space(features)
    stats = class_stats(features, labels.codes, labels.n_classes,
                        gram_dtype=gram_dtype, device=device, moments=True)
    return hscore_reg_from_stats(stats, d)
