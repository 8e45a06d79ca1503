"""What the advisor looks at: a fixed vector per (candidate model, target), from what the tool
already computes (``tscope rank`` with baselines).

Per candidate, with its random-init twin's and the raw input's scores on the same target:

- the linear probe's and kNN's cross-validated accuracies (comparable across targets): the
  twin's, which says how hard the target is for the architecture untrained, and the
  candidate's margins over the twin and over the raw input (the candidate's own accuracy is
  the twin's plus its margin, so it enters through the margins alone, whose coefficients
  keep their sign: a better probe never lowers P(beats scratch). With the candidate's own
  accuracy as a free feature instead, the benchmark's fit gave kNN accuracy -0.81 against
  its margin's +0.41, i.e. a higher kNN margin meant a lower P(beats));
- for LogME, shrinkage H-score, SFDA and N-LEEP (whose scales differ from target to target),
  the candidate's rank among the candidates on that target, scaled to [0, 1] (1: first; 0.5
  for a single candidate; tied scores share their mean rank), and whether it scores above
  its twin;
- the target: log samples per class, log classes; the model: log feature width.

A missing value (a metric that was not computed) is NaN; the predictor fills it with its
training mean.
"""

from __future__ import annotations

import numpy as np

ACCURACY_METRICS = ("linear_probe", "knn")
RANKED_METRICS = ("logme", "hscore_reg", "sfda", "nleep")
METRICS = ACCURACY_METRICS + RANKED_METRICS  # what advise scores
FEATURES = tuple(
    [f for m in ACCURACY_METRICS for f in (f"{m}_random", f"{m}_vs_random", f"{m}_vs_raw")]
    + [f for m in RANKED_METRICS for f in (f"{m}_rank", f"{m}_above_random")]
    + ["log_per_class", "log_classes", "log_dim"])

#: Features without a bound of their own (log counts of samples, classes and feature
#: dimensions), which the advisor clips to its training data's range: every other feature is
#: an accuracy, a margin between two accuracies, a rank in [0, 1] or a 0/1 indicator.
UNBOUNDED = ("log_per_class", "log_classes", "log_dim")

#: Features whose larger values say the source fits the target better: its margins over its
#: random-init twin and over the raw input, its ranks among the candidates, and whether it
#: scores above its twin (the twin's accuracies and the target's and model's sizes are not:
#: an easy target helps the scratch model too).
MONOTONE = tuple(f for f in FEATURES
                 if f.endswith(("_vs_random", "_vs_raw", "_rank", "_above_random")))


def _get(scores: dict, metric: str, which: str) -> float:
    v = (scores.get(metric) or {}).get(which)
    return float("nan") if v is None else float(v)


def candidate_features(candidates: list[dict], per_class: float, classes: int) -> np.ndarray:
    """The feature vectors of the candidate models on one target.

    Parameters
    ----------
    candidates : list of dict
        Each with ``scores`` (``{metric: {"value", "random", "raw"}}``: the candidate's, its
        random-init twin's and the raw input's score) and ``dim`` (its feature width).
    per_class : float
        Training samples per class of the target.
    classes : int
        Classes of the target.

    Returns
    -------
    ndarray of shape (n_candidates, len(FEATURES))
        Columns in :data:`FEATURES` order; NaN where a score is missing.
    """
    from scipy.stats import rankdata

    n = len(candidates)
    out = np.full((n, len(FEATURES)), np.nan)
    col = {f: i for i, f in enumerate(FEATURES)}
    for i, c in enumerate(candidates):
        s = c.get("scores") or {}
        for m in ACCURACY_METRICS:
            v = _get(s, m, "value")
            out[i, col[f"{m}_random"]] = _get(s, m, "random")
            out[i, col[f"{m}_vs_random"]] = v - _get(s, m, "random")
            out[i, col[f"{m}_vs_raw"]] = v - _get(s, m, "raw")
        for m in RANKED_METRICS:
            v, r = _get(s, m, "value"), _get(s, m, "random")
            if v == v and r == r:
                out[i, col[f"{m}_above_random"]] = float(v > r)
        out[i, col["log_dim"]] = np.log(max(float(c.get("dim") or np.nan), 1.0))
    for m in RANKED_METRICS:
        v = np.array([_get(c.get("scores") or {}, m, "value") for c in candidates])
        ok = np.isfinite(v)
        if ok.sum() == 1:
            out[ok, col[f"{m}_rank"]] = 0.5
        elif ok.sum() > 1:  # tied scores share their mean rank: the order given is no tiebreak
            order = rankdata(v[ok], method="average") - 1.0  # 0 = lowest
            out[ok, col[f"{m}_rank"]] = order / (ok.sum() - 1)
    out[:, col["log_per_class"]] = np.log(max(per_class, 1.0))
    out[:, col["log_classes"]] = np.log(max(classes, 2))
    return out
