"""TransRate: mutual information between features and labels, measured by coding rates.

Huang, Huang, Wei, Long. "Frustratingly Easy Transferability Estimation", ICML 2022.
``TrR = R(Z, eps) - R(Z, eps | Y)`` with the coding rate
``R(Z) = 1/2 sum_i log(1 + lambda_i / eps)`` over the eigenvalues of Z^T Z / n, and
``R(Z | Y) = sum_c n_c / n R(Z_c)``. As in the authors' code (Long-Kai/TransRate, the
``transrate_eig`` + ``process_transrate_logs`` route with its defaults): features are centred,
each row is scaled to unit L2 norm, and both rates are divided by the rank of Z^T Z.

Speed: the authors take a D x D SVD for every class; a class with n_c < D samples has at most
n_c non-zero eigenvalues, which are those of its n_c x n_c Gram matrix, so this code solves the
smaller of the two symmetric eigenproblems (eigenvalues only). A row that is exactly the mean has
no direction and stays a zero row (the reference divides by zero there).
"""

from __future__ import annotations

import numpy as np

from transferscope.metrics._registry import metric
from transferscope.metrics._stats import matmul


def _eigvals_of_scatter(z: np.ndarray) -> np.ndarray:
    """Eigenvalues of z^T z / n via the smaller Gram matrix."""
    n, d = z.shape
    g = z @ z.T if n < d else z.T @ z
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
        Target features from the source model.
    labels : array-like of shape (n_samples,)
        Class labels.
    eps : float
        The distortion eps^2 of the coding rate.
    device : str, optional
        A torch device ("cuda") for the N x D^2 Gram matrix.

    Returns
    -------
    float
    """
    z = features - features.mean(axis=0, dtype=np.float64)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    z = np.divide(z, norms, out=np.zeros_like(z), where=norms > 0)
    n, d = z.shape
    eig_z = np.abs(np.linalg.eigvalsh(matmul(z.T, z, device=device) / n))
    rank = int(np.sum(eig_z > eig_z.max() * d * np.finfo(np.float64).eps))
    rz = np.sum(np.log1p(eig_z / eps)) / rank / 2.0
    order = np.argsort(labels.codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(labels.counts)])
    rzc = 0.0
    for c in range(labels.n_classes):
        zc = z[order[bounds[c] : bounds[c + 1]]]
        rzc += len(zc) / n * np.sum(np.log1p(_eigvals_of_scatter(zc) / eps)) / rank / 2.0
    return rz - rzc
