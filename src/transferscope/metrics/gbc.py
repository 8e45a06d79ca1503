"""GBC: Gaussian Bhattacharyya Coefficient.

Pandy, Agostinelli, Uijlings, Ferrari, Mensink. "Transferability Estimation using Bhattacharyya
Class Separability", CVPR 2022. Each class is a Gaussian with diagonal (or spherical) covariance;
``GBC = - sum_{c != c'} exp(-D_B(c, c'))`` with the Bhattacharyya distance
``D_B = 1/8 (mu - mu')^T S^-1 (mu - mu') + 1/2 log(det S / sqrt(det S_c det S_c'))``,
``S = (S_c + S_c') / 2``. Variances are population variances floored at 1e-4, and the spherical
variant uses one mean variance per class with the log-determinant term taken once (not D times),
both exactly as in google-research/stable_transfer, whose formula this reproduces.

Vectorised over all class pairs: class means and variances come from two sparse products
(exact two-pass variances), and the C x C x D pairwise terms are evaluated in blocks of classes
so memory stays bounded.

D > N (raw inputs, small targets): nothing to reduce. The cost is O(N D + C^2 D), linear in D
(reading the input is already O(N D)), with no D^2 or D^3 term; and the diagonal covariance is
tied to the feature basis, so a rotation onto the rows' span (what the covariance metrics use)
would change the value.
"""

from __future__ import annotations

import numpy as np

from transferscope.errors import InputError
from transferscope.metrics._registry import metric
from transferscope.metrics._stats import class_sums

VAR_FLOOR = 1e-4
BLOCK_ELEMENTS = 2**18  # pairwise terms per block: small enough to stay in cache


def class_moments(features, labels):
    """Per-class means and population variances (two-pass), variances floored at 1e-4."""
    counts = labels.counts.astype(np.float64)[:, None]
    means = class_sums(features, labels.codes, labels.n_classes) / counts
    resid = features - means[labels.codes]
    np.square(resid, out=resid)
    var = class_sums(resid, labels.codes, labels.n_classes) / counts
    return means, np.maximum(var, VAR_FLOOR)


def _diagonal_distances(means, var):
    """Bhattacharyya distances of all class pairs, upper triangle computed, then mirrored."""
    n_classes, dim = means.shape
    log_var_sum = np.log(var).sum(axis=1)
    bd = np.zeros((n_classes, n_classes))
    block = max(1, BLOCK_ELEMENTS // (n_classes * dim))
    for start in range(0, n_classes, block):
        stop = min(n_classes, start + block)
        # rows start..stop against columns start..C: the pairs not yet seen
        avg = (var[start:stop, None, :] + var[None, start:, :]) / 2.0
        diff = means[start:stop, None, :] - means[None, start:, :]
        first = np.einsum("ijk,ijk->ij", diff * diff, 1.0 / avg) / 8.0
        np.log(avg, out=avg)
        second = (
            avg.sum(axis=2) - 0.5 * log_var_sum[start:stop, None] - 0.5 * log_var_sum[None, start:]
        )
        bd[start:stop, start:] = first + 0.5 * second
    return np.triu(bd, 1) + np.triu(bd, 1).T


@metric(
    "gbc",
    "Gaussian Bhattacharyya coefficient: overlap of per-class Gaussians (higher = less overlap)",
    min_per_class=2,
    reference="gbc.diagonal / gbc.spherical",
)
def gbc(features, labels, *, gaussian_type="diagonal"):
    """GBC (Pandy et al., CVPR 2022): minus the summed Bhattacharyya coefficients of all pairs of
    per-class Gaussians; higher (closer to 0) = less class overlap.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Target features from the source model.
    labels : array-like of shape (n_samples,)
        Class labels, at least 2 samples per class.
    gaussian_type : {"diagonal", "spherical"}
        Per-class covariance: per-dimension variances, or one mean variance.

    Returns
    -------
    float
        At most 0.
    """
    if gaussian_type not in ("diagonal", "spherical"):
        raise InputError(
            f"Expected gaussian_type 'diagonal' or 'spherical', got {gaussian_type!r}"
        )
    means, var = class_moments(features, labels)
    if gaussian_type == "spherical":
        s = var.mean(axis=1)
        centred = means - means.mean(axis=0)
        sq = np.einsum("ij,ij->i", centred, centred)
        dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * centred @ centred.T, 0.0)
        avg = (s[:, None] + s[None, :]) / 2.0
        logs = np.log(s)
        bd = dist2 / avg / 8.0 + 0.5 * (np.log(avg) - 0.5 * logs[:, None] - 0.5 * logs[None, :])
    else:
        bd = _diagonal_distances(means, var)
    coeff = np.exp(-bd)
    np.fill_diagonal(coeff, 0.0)
    return -float(coeff.sum())
