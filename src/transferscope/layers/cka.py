"""Linear centred kernel alignment (Kornblith et al., ICML 2019): how similar two
representations of the same samples are, invariant to rotations and isotropic scaling.

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),  K = X X^T, L = Y Y^T.

The plain ("biased") estimator plugs in HSIC = ||Yc^T Xc||_F^2 (Xc, Yc column-centred). It is
strongly biased upwards when the width is large against the sample count: two *independent*
random feature matrices give about 0.96 at n = 60, d = 1280 and 0.81 at n = 300, so at the
sample sizes of a layer profile it cannot tell a pretrained layer from noise. The debiased
estimator (the default) plugs in the unbiased HSIC of Song et al. (JMLR 2012, eq. 5), as
Nguyen, Raghu & Kornblith (ICLR 2021) do for CKA:

    HSIC_u(K, L) = [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)),

with K~, L~ the kernel matrices with their diagonals set to 0. Its expectation is 0 for
independent representations, so the debiased CKA of noise against noise is about 0 at any
width (it can be slightly negative). With centred columns, 1'K~1 = -sum_i k_i and
K~1 = -k (k the squared row norms), so everything reduces to ||Y^T X||_F^2 (or the Gram
form <K, L>) and row norms: computed in the feature space (D x D products), or through the
n x n Gram matrices when the sample count is the smaller side; float64 throughout.
"""

from __future__ import annotations

import numpy as np

from transferscope.errors import InputError


def linear_cka(x, y, *, debiased: bool = True) -> float:
    """Linear CKA between two representations of the same samples (Kornblith et al., ICML 2019).

    Parameters
    ----------
    x : array-like of shape (n_samples, n_features_x)
    y : array-like of shape (n_samples, n_features_y)
        The same ``n_samples`` in the same order; widths may differ.
    debiased : bool, default True
        Use the unbiased HSIC estimator (Song et al., JMLR 2012), so that independent
        representations score about 0 whatever their width (needs at least 4 samples).
        False gives the plain estimator of Kornblith et al., biased towards 1 when the
        width is large against ``n_samples`` (needs at least 2 samples).

    Returns
    -------
    float
        1 for representations equal up to rotation and isotropic scaling, 0 when either is
        constant. The plain estimator lies in [0, 1]; the debiased one in about [-1, 1],
        near 0 for unrelated representations.

    Raises
    ------
    InputError
        For inputs that are not 2-D, differ in sample count, or have too few samples.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise InputError(f"Expected two (n, d) feature matrices of the same n samples, got "
                         f"shapes {x.shape} and {y.shape}")
    n = len(x)
    need = 4 if debiased else 2
    if n < need:
        raise InputError(f"Expected at least {need} samples for "
                         f"{'debiased ' if debiased else ''}CKA, got {n}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    if n < max(x.shape[1], y.shape[1]):  # Gram form: the n x n kernels
        kx, ky = x @ x.T, y @ y.T
        xy, xx, yy = (kx * ky).sum(), (kx * kx).sum(), (ky * ky).sum()
    else:
        xy = np.linalg.norm(y.T @ x) ** 2
        xx, yy = np.linalg.norm(x.T @ x) ** 2, np.linalg.norm(y.T @ y) ** 2
    if debiased:
        kd, ld = (x * x).sum(axis=1), (y * y).sum(axis=1)  # the kernels' diagonals

        def hsic(cross, a, b):
            # tr(K~L~) = <K, L> - a.b;  1'K~1 = -sum(a);  1'K~L~1 = a.b (centred columns)
            return (cross - a @ b + a.sum() * b.sum() / ((n - 1) * (n - 2))
                    - 2.0 * (a @ b) / (n - 2)) / (n * (n - 3))

        xy, xx, yy = hsic(xy, kd, ld), hsic(xx, kd, kd), hsic(yy, ld, ld)
        if xx <= 0 or yy <= 0:
            return 0.0  # constant (or rank-one noise-level) representation: nothing shared
        return float(xy / np.sqrt(xx * yy))
    if xx == 0 or yy == 0:
        return 0.0  # a constant representation shares nothing with anything
    return float(xy / np.sqrt(xx * yy))
