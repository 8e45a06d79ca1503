"""Empirical proxies: k-nearest-neighbour and linear-probe accuracy under stratified k-fold.

Both are what the scores above try to predict cheaply, so they are the natural sanity baseline:
accuracy of a classifier fitted on the frozen features, estimated by seeded stratified k-fold
cross-validation (every sample is scored once, by a model that never saw it). The folds are the
only randomness: for a given seed both metrics are deterministic.

- ``knn``: majority vote of the ``n_neighbors`` nearest training samples (Euclidean, or cosine on
  unit-normalised features), ties broken by the nearest neighbour. Distances in float32 tiles
  (never an N x N matrix) with a float64 re-ranking wherever float32 could misorder them: the
  neighbours are the exact ones.
- ``linear_probe``: multinomial logistic regression on standardised features with an L2 penalty
  ``||W||^2 / (2 C n)`` (scikit-learn's ``C`` convention), solved by L-BFGS in whitened
  coordinates to scikit-learn's default tolerance (default), by scikit-learn itself
  (``solver="sklearn"``), by the earlier plain L-BFGS (``solver="lbfgs"``), or replaced by a
  closed-form ridge probe (``solver="ridge"``).

The numerical work lives in :mod:`transferscope.metrics._probe_solvers`.
"""

from __future__ import annotations

import warnings

import numpy as np

from transferscope.errors import InputError, TransferabilityWarning
from transferscope.metrics._probe_solvers import (
    Whitener,
    fold_ids,
    knn_neighbours,
    knn_vote,
    logistic_lbfgs_torch,
    logistic_lbfgs_whitened,
    logistic_sklearn,
    preconditioner,
    probe_folds,
    ridge_weights,
)
from transferscope.metrics._registry import metric


@metric(
    "knn",
    "k-nearest-neighbour accuracy under seeded stratified k-fold cross-validation",
    stochastic=True,
    min_per_class=2,
)
def knn(features, labels, *, n_neighbors=5, metric="euclidean", folds=5, seed=0, device=None,
        block_rows=None):
    """Cross-validated k-nearest-neighbour accuracy of the frozen features.

    Every sample is classified by the majority label of its ``n_neighbors`` nearest samples in
    the other folds (ties between classes go to the class of the nearest of them). Distances:
    float32 tiles of ``block_rows`` x ``block_rows`` (one matrix product each, never an N x N
    matrix; a tile between two folds serves both, so every cross-fold pair is computed once), a
    running top-(k + 4) per row, then a float64 re-ranking of the rows whose float32 order is
    within the rounding error of a tie (and a float64 search of the rare row whose candidate
    list may have missed a neighbour). The neighbours are therefore the exact Euclidean ones;
    only exact distance ties may be resolved differently from a float64 brute force (here: the
    lower sample index wins). With more features than samples (D > N, N <= 4096) the N x N
    float64 Gram matrix is formed once and every fold reads its distances from it.
    The cost is about 0.4 N^2 D multiply-adds in every path; on 2 cores S2 (N=10,000, D=1,024)
    takes 1 s and S3 (N=50,000, D=2,048) about 35 s (the earlier float64 code: 2.5 s, 120 s),
    with identical predictions.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Target features from the source model.
    labels : array-like of shape (n_samples,)
        Class labels, at least 2 samples per class.
    n_neighbors : int
        Neighbours in the majority vote (ties broken by the nearest).
    metric : {"euclidean", "cosine"}
        Distance ("cosine": Euclidean distance of the unit-normalised features).
    folds : int
        Stratified folds (at most the smallest class's size).
    seed : int
        Seed of the folds.
    device : str, optional
        A torch device ("cuda") for the distance tiles.
    block_rows : int, optional
        Rows per side of a distance tile (default 4096: a 64 MiB float32 tile); bounds memory,
        not the result.

    Returns
    -------
    float
        Accuracy in [0, 1].
    """
    codes = labels.codes
    fold = fold_ids(codes, min(folds, int(labels.counts.min())), seed)
    pred = knn_predictions(features, codes, labels.n_classes, fold, n_neighbors=n_neighbors,
                           metric=metric, device=device, block_rows=block_rows)
    return float(np.mean(pred == codes))


def knn_predictions(x, codes, n_classes, fold, *, n_neighbors=5, metric="euclidean",
                    device=None, block_rows=None):
    """Cross-validated k-nearest-neighbour predictions (the work of :func:`knn`).

    Parameters
    ----------
    x : ndarray of shape (n_samples, n_features)
        Features (float64 or float32).
    codes : ndarray of shape (n_samples,)
        Class codes in ``0..n_classes-1``.
    n_classes : int
    fold : ndarray of shape (n_samples,)
        Test fold of every sample (:func:`~transferscope.metrics._probe_solvers.fold_ids`).
    n_neighbors, metric, device, block_rows
        As in :func:`knn`.

    Returns
    -------
    ndarray of shape (n_samples,)
        Predicted class code of every sample, by the folds that did not contain it.
    """
    if metric not in ("euclidean", "cosine"):
        raise InputError(f"Expected metric 'euclidean' or 'cosine', got {metric!r}")
    if n_neighbors < 1:
        raise InputError(f"Expected n_neighbors >= 1, got {n_neighbors}; try 5")
    if metric == "cosine":
        x = np.asarray(x, dtype=np.float64)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms == 0, 1.0, norms)
    nbrs = knn_neighbours(x, fold, n_neighbors, block_rows=block_rows, device=device)
    return knn_vote(np.where(nbrs >= 0, codes[np.maximum(nbrs, 0)], -1), n_classes)


SOLVERS = ("whitened", "sklearn", "lbfgs", "ridge")
# default tol: "whitened" within 0.5 point of the converged probe on every benchmark target;
# "sklearn" scikit-learn's own default
TOL = {"whitened": 3e-5, "sklearn": 1e-4}
MAX_ITER = {"whitened": 500, "sklearn": 100, "lbfgs": 100}  # defaults of the iterative solvers


@metric(
    "linear_probe",
    "Logistic-regression (linear probe) accuracy under seeded stratified k-fold",
    stochastic=True,
    min_per_class=2,
)
def linear_probe(features, labels, *, C=1.0, folds=5, seed=0, max_iter=None, tol=None,
                 solver="whitened", device=None):
    """Cross-validated accuracy of an L2-regularised multinomial logistic regression on the
    standardised frozen features (the linear probe of Kornblith, Shlens & Le, "Do Better
    ImageNet Models Transfer Better?", CVPR 2019).

    The model minimises ``mean cross-entropy + ||W||^2 / (2 C n)`` (scikit-learn's ``C``
    convention: ``LogisticRegression(C=C)`` on ``StandardScaler`` output, intercept unpenalised).
    Solvers (products in float32; accuracy, not the loss, is reported):

    - ``"whitened"`` (default): L-BFGS in coordinates whitened by the Cholesky factor of each
      fold's feature covariance (every fold's Gram matrix from one pass over the data), started
      from a ridge fit (the Newton step of the loss's quadratic model), two products with the
      features per iteration, stopped when the whitened gradient's largest entry is at most
      ``tol`` (3e-5; the accuracy, not the loss, is reported, and early stopping moves it by
      tenths of a point). It needs 10-40 iterations per fold on dense features (100-250 for
      plain L-BFGS); raw pixels with near-constant columns (MNIST) take about 120. Its accuracy and
      time are in the README's benchmark table (``bench/probes.py``): within 0.5 point of
      scikit-learn's ``LogisticRegression`` run to convergence on the same folds. The folds
      are not warm-started from each other: an unconverged solution of one fold, fitted on
      another fold's held-out labels, would carry them over (measured: +1.6 points at S3).
    - ``"lbfgs"``: the earlier solver, full-batch torch L-BFGS from zero for ``max_iter``
      iterations (slow: see the README's table).
    - ``"ridge"``: a different, closed-form probe: one-vs-rest ridge regression on the one-hot
      labels with penalty ``||W||^2 / C`` (scikit-learn's ``RidgeClassifier(alpha=1/C)`` on
      standardised features), every fold solved from one Gram matrix (S3: 7 s). It is NOT the
      logistic probe: its accuracy differed from the logistic one by +0.9 (S1), +1.1 (S2),
      +3.0 (S3), -3.6 (digits) points.

    With more features than samples (D > N) every solver but ``"sklearn"`` works in the
    eigenbasis of each fold's N x N training kernel: the same fitted model (an L2-penalised
    linear model's weights lie in the span of the training rows), at a cost set by N, not D.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Target features from the source model.
    labels : array-like of shape (n_samples,)
        Class labels, at least 2 samples per class.
    C : float
        Inverse L2 strength (> 0), scikit-learn's convention.
    folds : int
        Stratified folds (at most the smallest class's size).
    seed : int
        Seed of the folds (the only randomness).
    max_iter : int, optional
        Iterations at most: default 500 for ``"whitened"`` (a warning says when a fold stops
        there), 100 for ``"sklearn"`` and ``"lbfgs"`` (their defaults); unused by ``"ridge"``.
    tol : float, optional
        Convergence tolerance of ``"whitened"`` and ``"sklearn"`` (> 0): the largest gradient
        entry at which they stop. Default 3e-5 for ``"whitened"`` (1e-4, scikit-learn's
        default, left the reference input S2 0.49 point from the converged accuracy), 1e-4
        for ``"sklearn"``; 1e-6 fits more tightly at 2-4 times the time.
    solver : {"whitened", "sklearn", "lbfgs", "ridge"}
        See above. ``"sklearn"`` is scikit-learn itself (``StandardScaler`` and
        ``LogisticRegression(C, solver="lbfgs", max_iter, tol)`` in float64 on each fold): the
        exact reference, 10-100x slower.
    device : str, optional
        A torch device for the products with the features (default: numpy on the CPU).

    Returns
    -------
    float
        Accuracy in [0, 1].
    """
    codes = labels.codes
    fold = fold_ids(codes, min(folds, int(labels.counts.min())), seed)
    pred = linear_probe_predictions(features, codes, labels.n_classes, fold, C=C,
                                    max_iter=max_iter, tol=tol, solver=solver, device=device)
    return float(np.mean(pred == codes))


def linear_probe_predictions(x, codes, n_classes, fold, *, C=1.0, max_iter=None, tol=None,
                             solver="whitened", device=None, info=None):
    """Cross-validated linear-probe predictions (the work of :func:`linear_probe`).

    Parameters
    ----------
    x : ndarray of shape (n_samples, n_features)
        Features (float64 or float32).
    codes : ndarray of shape (n_samples,)
        Class codes in ``0..n_classes-1``.
    n_classes : int
    fold : ndarray of shape (n_samples,)
        Test fold of every sample (:func:`~transferscope.metrics._probe_solvers.fold_ids`).
    C, max_iter, tol, solver, device
        As in :func:`linear_probe`.
    info : dict, optional
        Filled with ``"iterations"`` (per fold, ``"whitened"`` only) and ``"dual"``.

    Returns
    -------
    ndarray of shape (n_samples,)
        Predicted class code of every sample, by the model of the fold that held it out.
    """
    if C <= 0:
        raise InputError(f"Expected C > 0 (inverse L2 strength), got {C}; try 1.0")
    if solver not in SOLVERS:
        raise InputError(f"Expected solver in {SOLVERS}, got {solver!r}; use 'whitened'")
    if max_iter is None:
        max_iter = MAX_ITER.get(solver, 1)
    elif max_iter < 1:
        raise InputError(f"Expected max_iter >= 1, got {max_iter}; leave it unset")
    if tol is None:
        tol = TOL.get(solver, 1.0)
    elif not tol > 0:
        raise InputError(f"Expected tol > 0, got {tol}; leave it unset (3e-5) or try 1e-6")
    info = {} if info is None else info
    info["iterations"] = []
    if solver == "sklearn":
        return logistic_sklearn(x, codes, fold, C=C, max_iter=max_iter, tol=tol)
    gram = {"whitened": "float32", "ridge": "float64", "lbfgs": None}[solver]
    pred = np.empty(len(codes), dtype=np.int64)
    stopped = 0
    for prob in probe_folds(x, codes, fold, n_classes, gram=gram,
                            device=device if solver == "whitened" else None):
        info["dual"] = prob.dual
        y = codes[prob.train]
        n = len(y)
        if solver == "ridge":
            w = ridge_weights(prob.gram, prob.class_sums, 1.0 / C)
            b = np.bincount(y, minlength=n_classes) / n
        elif solver == "lbfgs":
            w, b = logistic_lbfgs_torch(prob.dense_train(), y, n_classes, C, max_iter,
                                        device or "cpu")
        else:
            lam = 1.0 / (C * n)
            # each fold's own preconditioner: rescaling one fold's to another's standardisation
            # fails where a column is near-constant in one of them (raw pixels: MNIST took 500
            # iterations instead of 100 that way)
            white = Whitener(preconditioner(prob.gram, n, n_classes * lam))
            # every fold starts from its own ridge fit: a warm start from another fold's
            # (unconverged) solution carries that fold's fit to this fold's held-out labels
            w, b, n_iter, converged = logistic_lbfgs_whitened(
                prob.products, y, n_classes, lam, white, prob.class_sums, max_iter=max_iter,
                tol=tol)
            info["iterations"].append(n_iter)
            stopped += not converged
        pred[prob.test] = prob.test_logits(w, b).argmax(axis=1)
    if stopped:
        warnings.warn(
            f"linear_probe: L-BFGS stopped at max_iter={max_iter} before convergence in "
            f"{stopped} of {len(info['iterations'])} folds; raise max_iter",
            TransferabilityWarning, stacklevel=3)
    return pred
