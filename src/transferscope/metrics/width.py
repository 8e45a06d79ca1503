"""Scores that do not reward width: the same transform of every model's features before they
are scored.

Metrics computed from class statistics in the whole feature space (H-score, Bao et al.,
ICIP 2019; TransRate, Huang et al., ICML 2022; GBC, Pandy et al., CVPR 2022; SFDA, Shao et
al., ECCV 2022) tend to grow with the feature width D at a fixed sample count: with more
dimensions the estimated class separation grows, whatever the features encode. A 1280-wide
ImageNet model can then outrank a 64-wide source that fine-tunes 20 points better. The
remedy is to score every model in the same number of dimensions:

- ``"none"``: the features as the model gives them;
- ``"pca:K"`` (``"pca"``: K = 32): principal component analysis fitted on the scored (target
  training) data, keeping the top ``K`` components (all of them when the model has fewer
  dimensions or the data fewer samples: a rotation then, so rotation-invariant metrics do not
  change), as N-LEEP (Li et al., CVPR 2021) reduces features with PCA before its mixture
  model;
- ``"standardize"``: each dimension centred and scaled to unit variance (constant dimensions
  dropped): removes scale differences between models, not the dimension count.

Which one ranks better is measured on the project's benchmark (``bench/width.py``): over its
12 targets of three modalities (24 target x size cells), the mean weighted Kendall tau of the
ten metrics with the fine-tuned accuracy is +0.44 with ``none``, +0.47 with ``pca:32``,
+0.48 with ``pca:64`` and +0.40 with ``standardize``; with ``none``, H-score, GBC and SFDA place
the widest candidate above where fine-tuning does (+0.30, where +1 would be the whole
candidate list), with ``pca:32`` not (-0.05 to -0.10). ``pca:32`` is the default
(:data:`DEFAULT_WIDTH`): it led when it was chosen, and ``pca:64``'s lead since is 0.007.
"""

from __future__ import annotations

import numpy as np

from transferscope.errors import InputError

DEFAULT_PCA_DIM = 32
#: The width setting rank and studies use unless told otherwise: the one that ranked best on
#: the benchmark (see the module docstring).
DEFAULT_WIDTH = f"pca:{DEFAULT_PCA_DIM}"
WIDTH_METHODS = ("none", "pca", "standardize")


def check_width(spec: str) -> str:
    """Validate a width setting and return its canonical form.

    Parameters
    ----------
    spec : str
        ``"none"``, ``"pca"``, ``"pca:K"`` (K >= 1) or ``"standardize"``.

    Returns
    -------
    str
        ``"none"``, ``"pca:K"`` (with K filled in) or ``"standardize"``.

    Raises
    ------
    InputError
        For anything else.
    """
    method, _, arg = str(spec).strip().lower().partition(":")
    if method == "pca":
        try:
            k = int(arg) if arg else DEFAULT_PCA_DIM
        except ValueError:
            k = 0
        if k < 1:
            raise InputError(f"Expected pca:K with an integer K >= 1 (components kept), got "
                             f"{spec!r}; e.g. pca:32")
        return f"pca:{k}"
    if method in ("none", "standardize") and not arg:
        return method
    raise InputError(f"Expected a width setting among none, pca[:K], standardize, got "
                     f"{spec!r}; e.g. --width pca:32")


def equalize_width(features, spec: str = "none") -> np.ndarray:
    """Transform one model's features as the width setting says, before scoring.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
    spec : str
        A width setting (:func:`check_width`).

    Returns
    -------
    ndarray of shape (n_samples, n_out)
        ``"none"``: the features unchanged (``n_out = n_features``). ``"pca:K"``: their
        principal-component scores in float64, ``n_out = min(K, n_features, n_samples - 1)``
        (at least 1), components ordered by variance, each with its largest loading positive
        (deterministic signs). ``"standardize"``: z-scores in float64 of the non-constant
        dimensions.
    """
    spec = check_width(spec)
    if spec == "none":
        return features
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0)
    if spec == "standardize":
        sd = x.std(axis=0)
        keep = sd > 1e-12 * max(float(sd.max(initial=0.0)), 1e-300)
        return x[:, keep] / sd[keep]
    k = max(1, min(int(spec.split(":")[1]), x.shape[1], len(x) - 1))
    n, d = x.shape
    if d <= n:  # the d x d covariance: O(n d^2 + d^3)
        vals, vecs = np.linalg.eigh(x.T @ x)
        order = np.argsort(vals)[::-1][:k]
        vecs = vecs[:, order]
    else:  # the n x n Gram matrix: its eigenvectors are the scores' directions
        vals, u = np.linalg.eigh(x @ x.T)
        order = np.argsort(vals)[::-1][:k]
        vecs = x.T @ u[:, order]
        vecs /= np.maximum(np.linalg.norm(vecs, axis=0), 1e-300)
    flip = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])])
    return x @ (vecs * np.where(flip == 0, 1.0, flip))
