"""Linear centred kernel alignment (Kornblith et al., ICML 2019): how similar two
representations of the same samples are, invariant to rotations and isotropic scaling.

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F),  Xc, Yc column-centred.

Computed in the feature space (D x D products), or through the n x n Gram matrices when the
sample count is the smaller side; float64 throughout.
"""

from __future__ import annotations

import numpy as np

from transferscope.errors import InputError


def linear_cka(x, y) -> float:
    """Linear CKA between two representations of the same samples (Kornblith et al., ICML 2019).

    Parameters
    ----------
    x : array-like of shape (n_samples, n_features_x)
    y : array-like of shape (n_samples, n_features_y)
        The same ``n_samples`` (at least 2) in the same order; widths may differ.

    Returns
    -------
    float
        In [0, 1]; 1 for representations equal up to rotation and isotropic scaling, 0 when
        either is constant.

    Raises
    ------
    InputError
        For inputs that are not 2-D, differ in sample count, or have fewer than 2 samples.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise InputError(f"Expected two (n, d) feature matrices of the same n samples, got "
                         f"shapes {x.shape} and {y.shape}")
    if len(x) < 2:
        raise InputError(f"Expected at least 2 samples for CKA, got {len(x)}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    if len(x) < max(x.shape[1], y.shape[1]):  # Gram form: HSIC of the n x n kernels
        kx, ky = x @ x.T, y @ y.T
        num, nx, ny = (kx * ky).sum(), np.linalg.norm(kx), np.linalg.norm(ky)
    else:
        num = np.linalg.norm(y.T @ x) ** 2
        nx, ny = np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
    if nx == 0 or ny == 0:
        return 0.0  # a constant representation shares nothing with anything
    return float(num / (nx * ny))
