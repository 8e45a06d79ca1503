"""Empirical proxies: k-nearest-neighbour and linear-probe accuracy under stratified k-fold.

Both are what the scores above try to predict cheaply, so they are the natural sanity baseline:
accuracy of a classifier fitted on the frozen features, estimated by seeded stratified k-fold
cross-validation (every sample is scored once, by a model that never saw it).

- ``knn``: majority vote of the ``n_neighbors`` nearest training samples (Euclidean, or cosine on
  unit-normalised features), ties broken by the nearest neighbour; distances are computed in row
  blocks (one matrix product each), never as an N x N matrix.
- ``linear_probe``: multinomial logistic regression on standardised features with an L2 penalty
  ``||W||^2 / (2 C n)`` (scikit-learn's ``C`` convention), fitted by full-batch L-BFGS in torch
  in float32 (deterministic on the CPU for a given thread count; ``device="cuda"`` to use a
  GPU). Accuracy, not the loss, is reported, so single precision costs nothing measurable.
"""

from __future__ import annotations

import numpy as np

from transferscope.errors import InputError
from transferscope.metrics._registry import metric
from transferscope.metrics._stats import matmul

BLOCK_BYTES = 64 * 2**20


def _folds(codes, folds, seed):
    from sklearn.model_selection import StratifiedKFold

    if folds < 2:
        raise InputError(f"Expected folds >= 2, got {folds}; use 5 or 10")
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(
        np.zeros(len(codes)), codes
    )


def _knn_predict(train, train_y, test, n_neighbors, n_classes, device=None):
    k = min(n_neighbors, len(train))
    train_sq = np.einsum("ij,ij->i", train, train)
    block = max(1, BLOCK_BYTES // (8 * len(train)))
    preds = np.empty(len(test), dtype=np.int64)
    train_t = train.T
    if device is not None:
        import torch

        train_t = torch.as_tensor(train.T, dtype=torch.float64, device=device)
    for start in range(0, len(test), block):
        t = test[start : start + block]
        dist = train_sq[None, :] - 2.0 * matmul(t, train_t, device=device)  # + ||t||^2
        nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(dist, nearest, axis=1).argsort(axis=1, kind="stable")
        nearest = np.take_along_axis(nearest, order, axis=1)
        votes = train_y[nearest]  # (b, k), nearest first
        counts = np.zeros((len(t), n_classes), dtype=np.int64)
        np.add.at(counts, (np.arange(len(t))[:, None], votes), 1)
        best = counts.max(axis=1, keepdims=True)
        # among the tied classes, take the one whose first vote is nearest
        is_tied = counts[np.arange(len(t))[:, None], votes] == best
        preds[start : start + block] = votes[np.arange(len(t)), is_tied.argmax(axis=1)]
    return preds


@metric(
    "knn",
    "k-nearest-neighbour accuracy under seeded stratified k-fold cross-validation",
    stochastic=True,
    min_per_class=2,
)
def knn(features, labels, *, n_neighbors=5, metric="euclidean", folds=5, seed=0, device=None):
    """Cross-validated k-nearest-neighbour accuracy of the frozen features.

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
        A torch device ("cuda") for the distance products.

    Returns
    -------
    float
        Accuracy in [0, 1].
    """
    if metric not in ("euclidean", "cosine"):
        raise InputError(f"Expected metric 'euclidean' or 'cosine', got {metric!r}")
    x = np.asarray(features, dtype=np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms == 0, 1.0, norms)
    codes = labels.codes
    folds = min(folds, int(labels.counts.min()))
    correct = 0
    for train_idx, test_idx in _folds(codes, folds, seed):
        pred = _knn_predict(x[train_idx], codes[train_idx], x[test_idx], n_neighbors,
                            labels.n_classes, device)
        correct += int((pred == codes[test_idx]).sum())
    return correct / len(codes)


def _fit_logistic(x, y, n_classes, c, max_iter, device):
    import torch

    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y, device=device)
    w = torch.zeros((x.shape[1], n_classes), dtype=torch.float32, device=device,
                    requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float32, device=device, requires_grad=True)
    penalty = 1.0 / (2.0 * c * len(x))
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, tolerance_grad=1e-6,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + penalty * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


@metric(
    "linear_probe",
    "Logistic-regression (linear probe) accuracy under seeded stratified k-fold",
    stochastic=True,
    min_per_class=2,
)
def linear_probe(features, labels, *, C=1.0, folds=5, seed=0, max_iter=100, device=None):
    """Cross-validated accuracy of an L2-regularised multinomial logistic regression on the
    standardised frozen features.

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
        Seed of the folds.
    max_iter : int
        L-BFGS iterations at most.
    device : str, optional
        A torch device for the fit (default: the CPU).

    Returns
    -------
    float
        Accuracy in [0, 1].
    """
    import torch

    if C <= 0:
        raise InputError(f"Expected C > 0 (inverse L2 strength), got {C}; try 1.0")
    dev = device or "cpu"
    x = np.asarray(features, dtype=np.float64)
    codes = labels.codes
    folds = min(folds, int(labels.counts.min()))
    correct = 0
    for train_idx, test_idx in _folds(codes, folds, seed):
        train = x[train_idx]
        mean, std = train.mean(axis=0), train.std(axis=0)
        std = np.where(std == 0, 1.0, std)
        w, b = _fit_logistic((train - mean) / std, codes[train_idx], labels.n_classes, C,
                             max_iter, dev)
        test = torch.as_tensor((x[test_idx] - mean) / std, dtype=torch.float32, device=dev)
        pred = (test @ w + b).argmax(dim=1).cpu().numpy()
        correct += int((pred == codes[test_idx]).sum())
    return correct / len(codes)
