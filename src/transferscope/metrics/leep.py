"""LEEP and NCE: transferability from the source model's predictions on the target data.

LEEP: Nguyen, Hassner, Seeger, Archambeau. "LEEP: A New Measure to Evaluate Transferability of
Learned Representations", ICML 2020, Eq. 2:
``LEEP = 1/N sum_i log sum_z P(y_i | z) theta(x_i)_z`` with the empirical conditional
``P(y | z) = P(y, z) / P(z)``, ``P(y, z) = 1/N sum_{i: y_i = y} theta(x_i)_z``.

NCE: Tran, Nguyen, Hassner. "Transferability and Hardness of Supervised Classification Tasks",
ICCV 2019: the negative conditional entropy ``-H(Y | Z)`` of target labels given the source
model's hard predictions ``z = argmax theta(x)``.

Both are vectorised: the joint distribution is one sparse product (classes x source classes),
and the per-sample expectation is taken in small row blocks so memory stays O(block x Cs).
"""

from __future__ import annotations

import numpy as np

from transferscope.metrics._registry import metric
from transferscope.metrics._stats import class_sums


@metric(
    "leep",
    "Log expected empirical prediction of target labels from source-class probabilities",
    inputs="source_probs",
    reference="leep.thuml",
)
def leep(source_probs, labels):
    """LEEP (Nguyen et al., ICML 2020, Eq. 2): the mean log-likelihood of the target labels under
    the empirical predictor built from the source model's class probabilities; higher = better.

    Parameters
    ----------
    source_probs : array-like of shape (n_samples, n_source_classes)
        The source model's probabilities on the target samples; rows sum to 1 (within 1e-4,
        then renormalised).
    labels : array-like of shape (n_samples,)
        Target class labels.

    Returns
    -------
    float
        At most 0.
    """
    n = len(source_probs)
    codes = labels.codes
    joint = class_sums(source_probs, codes, labels.n_classes) / n  # (C, Cs) = P(y, z)
    marginal = joint.sum(axis=0)  # P(z)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P(y | z)
    total = 0.0
    # small row blocks: each sample's row of P(y | z) is gathered into a cache-sized buffer
    step = max(1, 2**20 // source_probs.shape[1])
    for start in range(0, n, step):
        p = source_probs[start : start + step]
        total += np.log(np.einsum("ij,ij->i", p, cond[codes[start : start + step]])).sum()
    return total / n


@metric(
    "nce",
    "Negative conditional entropy of target labels given the source model's hard predictions",
    inputs="source_predictions",
    reference="nce.thuml",
)
def nce(source_labels, labels):
    """NCE (Tran et al., ICCV 2019): ``-H(Y | Z)`` of target labels given the source model's hard
    predictions; higher (closer to 0) = better.

    Parameters
    ----------
    source_labels : array-like of shape (n_samples,) or (n_samples, n_source_classes)
        The source model's predicted labels, or its probabilities (their argmax is taken).
    labels : array-like of shape (n_samples,)
        Target class labels.

    Returns
    -------
    float
        At most 0.
    """
    _, z = np.unique(source_labels, return_inverse=True)
    z = z.reshape(-1)
    n_z, n_y = int(z.max()) + 1, labels.n_classes
    joint = np.bincount(z * n_y + labels.codes, minlength=n_z * n_y).reshape(n_z, n_y)
    joint = joint / len(z)
    p_z = joint.sum(axis=1, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log((joint / p_z)[nz])))
