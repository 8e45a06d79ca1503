"""TransRate: mutual information between features and labels, measured by coding rates.

Huang, Huang, Wei, Long. "Frustratingly Easy Transferability Estimation", ICML 2022.
``TrR = R(Z, eps) - R(Z, eps | Y)`` with the coding rate
``R(Z) = 1/2 sum_i log(1 + lambda_i / eps)`` over the eigenvalues of Z^T Z / n, and
``R(Z | Y) = sum_c n_c / n R(Z_c)``. As in the authors' code (Long-Kai/TransRate, the
``transrate_eig`` + ``process_transrate_logs`` route with its defaults): features are centred,
each row is scaled to unit L2 norm, and both rates are divided by the rank of Z^T Z.

Speed: the authors take a D x D SVD for every class; a class with n_c < D samples has at most
n_c non-zero eigenvalues, which are those of its n_c x n_c Gram matrix, so this code solves the
smaller of the two symmetric eigenproblems (eigenvalues only). The same holds for the whole
feature set: with D > N (raw inputs, small targets) the non-zero eigenvalues of Z^T Z / n are
those of the N x N Gram matrix Z Z^T / n (the dual form, O(N^2 D + N^3) instead of
O(N D^2 + D^3)); the D - N zero eigenvalues add log(1 + 0) = 0 to the rate, and the rank
tolerance keeps the original D. Measured equal to the D x D computation to 1e-12 relative
(``tests/metrics/test_wide.py``). A row that is exactly the mean has no direction and stays a
zero row (the reference divides by zero there).
"""

from __future__ import annotations

import numpy as np

from transferscope.metrics._registry import metric
from transferscope.metrics._stats import matmul


def _eigvals_of_scatter(z: np.ndarray, *, device=None, dual=True) -> np.ndarray:
    """Eigenvalues of z^T z / n (z of shape (n, d)), via the smaller Gram matrix.

    Parameters
    ----------
    z : ndarray of shape (n, d)
    device : str or None
        A torch device for the Gram matrix.
    dual : bool
        Use the n x n matrix z z^T when n < d (``False``: always the d x d one).

    Returns
    -------
    ndarray of shape (min(n, d),) or (d,)
        Absolute values of the eigenvalues.
    """
    n, d = z.shape
    g = matmul(z, z.T, device=device) if (dual and n < d) else matmul(z.T, z, device=device)
    return np.abs(np.linalg.eigvalsh(g / n))


@metric(
    "transrate",
    "TransRate: coding rate of the features minus their coding rate given the class",
    reference="transrate.official",
)
def transrate(features, labels, *, eps=1e-4, device=None):
    """TransRate (Huang et al., ICML 2022): coding rate of the features minus their coding rate
    given the class; higher = better.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Target features from the source model; with n_features > n_samples the eigenvalues
        come from the N x N Gram matrix (the dual form; same value).
    labels : array-like of shape (n_samples,)
        Class labels.
    eps : float
        The distortion eps^2 of the coding rate.
    device : str, optional
        A torch device ("cuda") for the Gram matrix of all samples.

    Returns
    -------
    float
    """
    return _transrate(features, labels, eps, device, dual=True)


def _transrate(features, labels, eps, device, *, dual) -> float:
    z = features - features.mean(axis=0, dtype=np.float64)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    z = np.divide(z, norms, out=np.zeros_like(z), where=norms > 0)
    n, d = z.shape
    eig_z = _eigvals_of_scatter(z, device=device, dual=dual)
    rank = int(np.sum(eig_z > eig_z.max() * d * np.finfo(np.float64).eps))
    rz = np.sum(np.log1p(eig_z / eps)) / rank / 2.0
    order = np.argsort(labels.codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(labels.counts)])
    rzc = 0.0
    for c in range(labels.n_classes):
        zc = z[order[bounds[c] : bounds[c + 1]]]
        eig_c = _eigvals_of_scatter(zc, dual=dual)
        rzc += len(zc) / n * np.sum(np.log1p(eig_c / eps)) / rank / 2.0
    return rz - rzc
