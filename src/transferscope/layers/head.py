"""Head width: a seeded, cross-validated search on cached features.

For each width (0 = linear, else one hidden ReLU layer) a head is trained on the features of
each stratified fold's training part (AdamW, full batch, fixed steps, weight decay) and scored
on the held-out part. The selection score penalises overfitting:

    score(width) = mean validation accuracy - penalty * mean max(0, train acc - val acc)

and the smallest width within ``tolerance`` of the best score wins (simpler heads first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from transferscope.errors import InputError

WIDTHS = (0, 32, 128, 512)


@dataclass
class HeadSearch:
    """Result of :func:`search_head_width`.

    Attributes
    ----------
    rows : list of dict
        One per width tried: ``head_width``, ``val_acc``, ``train_acc`` (means over folds),
        ``gap`` (mean of max(0, train - val accuracy)) and ``score``.
    best : int
        The chosen width (0 = linear).
    rule : str
        The selection rule, in words.
    """

    rows: list[dict]  # per width: val_acc, train_acc, gap, score
    best: int
    rule: str


def _train_head(x, y, n_classes, width, steps, lr, weight_decay, seed):
    torch.manual_seed(seed)
    d = x.shape[1]
    head = (torch.nn.Linear(d, n_classes) if width == 0 else torch.nn.Sequential(
        torch.nn.Linear(d, width), torch.nn.ReLU(), torch.nn.Linear(width, n_classes)))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(x), y).backward()
        opt.step()
    return head.eval()


def search_head_width(features, labels, *, widths=WIDTHS, folds: int = 3, penalty: float = 0.5,
                      tolerance: float = 0.005, steps: int = 300, lr: float = 1e-2,
                      weight_decay: float = 1e-3, seed: int = 0) -> HeadSearch:
    """Choose a head width by stratified K-fold cross-validation on fixed features (see the
    module docstring for the score and the rule).

    Features are standardised per dimension; each head is trained full-batch with AdamW for
    ``steps`` steps, seeded per fold.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Features of the layer the head will sit on.
    labels : array-like of shape (n_samples,)
        Class labels (any values); every class needs at least ``folds`` samples.
    widths : iterable of int
        Widths to try (0 = linear, else one hidden ReLU layer of that many units).
    folds : int
        Cross-validation folds.
    penalty : float
        Weight of the mean train-minus-validation accuracy gap in the score.
    tolerance : float
        The smallest width whose score is within this of the best wins.
    steps, lr, weight_decay : int, float, float
        AdamW training of each head.
    seed : int
        Seed of the folds and of the heads' initialisation.

    Returns
    -------
    HeadSearch

    Raises
    ------
    InputError
        For a negative width or a class with fewer than ``folds`` samples.
    """
    from sklearn.model_selection import StratifiedKFold

    widths = sorted({int(w) for w in widths})
    if not widths or widths[0] < 0:
        raise InputError(f"Expected head widths >= 0, got {widths}")
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < folds:
        raise InputError(f"Expected at least {folds} samples per class for {folds}-fold head "
                         f"search, got {counts.min()}; lower folds or add data")
    x = np.asarray(features, dtype=np.float32)
    mu, sd = x.mean(0), x.std(0) + 1e-6  # standardised, as the fine-tuned head would see
    xt = torch.from_numpy((x - mu) / sd)
    yt = torch.from_numpy(codes.reshape(-1).astype(np.int64))
    n_classes = len(counts)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    rows = []
    for width in widths:
        tr_acc, va_acc = [], []
        for k, (tr, va) in enumerate(cv.split(x, codes)):
            head = _train_head(xt[tr], yt[tr], n_classes, width, steps, lr, weight_decay,
                               seed + k)
            with torch.no_grad():
                tr_acc.append((head(xt[tr]).argmax(1) == yt[tr]).float().mean().item())
                va_acc.append((head(xt[va]).argmax(1) == yt[va]).float().mean().item())
        gap = float(np.mean(np.maximum(0.0, np.subtract(tr_acc, va_acc))))
        rows.append({"head_width": width, "val_acc": float(np.mean(va_acc)),
                     "train_acc": float(np.mean(tr_acc)), "gap": gap,
                     "score": float(np.mean(va_acc)) - penalty * gap})
    top = max(r["score"] for r in rows)
    best = next(r["head_width"] for r in rows if r["score"] >= top - tolerance)
    rule = (f"head width: {folds}-fold CV on the cut layer's features; score = val acc - "
            f"{penalty:g} x max(0, train - val acc); smallest width within {tolerance:g} of "
            "the best score")
    return HeadSearch(rows, best, rule)
