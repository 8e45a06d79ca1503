"""PARC: Pairwise Annotation Representation Comparison.

Bolya, Mittapalli, Hoffman. "Scalable Diverse Model Selection for Accessible Transfer
Learning", NeurIPS 2021. The Spearman correlation (x 100)
between the representation dissimilarity matrix of the features, ``1 - corr(f_i, f_j)`` after a
32-dimensional PCA and standardisation, and that of the one-hot labels.

As in the authors' code (dbolya/parc, ``PARC(n_dims=32)``): randomized PCA with
``iterated_power=1`` and their fixed ``random_state=1919`` (the default ``seed``), then
StandardScaler, then the strict upper triangle of both matrices.

Memory: the reference builds several N x N float64 matrices (about 93 GiB at N = 50,000). Here the
pairwise part runs on a class-stratified, seeded subsample of at most ``max_samples`` rows, so
memory is O(max_samples^2) (under 1 GiB at the default 5000), and the label matrix is never
formed: its two values (same class / different class) make the Spearman correlation a
rank-biserial formula over the ranks of the feature dissimilarities. With N <= max_samples
(the reference input has N = 2000) nothing is subsampled and the value is the reference's.

D > N (raw inputs, small targets): nothing to reduce. The randomized PCA costs O(N D k) with
k = n_dims + 10 (linear in D; no D x D matrix is formed) and the pairwise part O(N^2 k). The PCA
is not rotation invariant (its random test matrix and its sign convention live in the feature
basis, and PARC's row-wise correlations see the signs), so a rotation onto the rows' span would
change the value.
"""

from __future__ import annotations

import numpy as np

from transferscope.errors import InputError
from transferscope.metrics._registry import metric
from transferscope.metrics.sampling import stratified_subsample


@metric(
    "parc",
    "Spearman correlation (x100) of feature and label dissimilarity matrices (subsampled)",
    reference="parc.official",
)
def parc(features, labels, *, n_dims=32, max_samples=5000, seed=1919):
    """PARC (Bolya et al., NeurIPS 2021): Spearman correlation (x 100) of the feature and label
    dissimilarity matrices; higher = better.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Target features from the source model.
    labels : array-like of shape (n_samples,)
        Class labels.
    n_dims : int or None
        PCA dimensions (randomized PCA, as the authors' code); ``None`` skips the PCA.
    max_samples : int or None
        The pairwise part runs on a class-stratified subsample of at most this many rows, so
        memory is O(min(n_samples, max_samples)^2).
    seed : int
        Seed of the PCA and of the subsample (default: the authors' 1919).

    Returns
    -------
    float
        In [-100, 100]; NaN when every pair of samples is of the same class, or every pair
        of different classes.
    """
    import scipy.stats
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float64)
    if n_dims is not None:
        x = PCA(
            n_components=min(n_dims, x.shape[0], x.shape[1]),
            svd_solver="randomized",
            random_state=seed,
            iterated_power=1,
        ).fit_transform(x)
    if x.shape[1] < 3:
        raise InputError(
            f"Expected at least 3 feature dimensions for PARC (a correlation between rows of "
            f"2 values is always +-1), got {x.shape[1]}; pass richer features or n_dims >= 3"
        )
    codes = labels.codes
    if max_samples is not None and len(x) > max_samples:
        idx = stratified_subsample(codes, max_samples, seed)
        x, codes = x[idx], codes[idx]
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std == 0, 1.0, std)
    # row-wise Pearson correlation = dot products of centred, unit-norm rows
    x = x - x.mean(axis=1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    iu = np.triu_indices(len(x), 1)
    dissim = 1.0 - (x @ x.T)[iu]
    different = codes[iu[0]] != codes[iu[1]]
    del iu
    ranks = scipy.stats.rankdata(dissim)
    del dissim
    p = different.mean()
    if p in (0.0, 1.0):
        return float("nan")
    gap = ranks[different].mean() - ranks[~different].mean()
    return float(100.0 * gap * np.sqrt(p * (1.0 - p)) / ranks.std())
