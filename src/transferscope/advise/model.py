"""The advisor's predictor: small, interpretable, fitted on benchmark records, stored as JSON.

Linear models over the standardised :data:`~transferscope.advise.features.FEATURES`
(missing values filled with the training mean, i.e. 0 after standardising):

- fine-tuned accuracy (the best strategy's test accuracy) as the level of the candidates'
  (target, size) cell plus each candidate's deviation from it: one ridge regression (Hoerl &
  Kennard, 1970) on the cell means of :data:`LEVEL_FEATURES` and of the accuracy, one on the
  within-cell deviations of every feature but the width (:data:`NOT_RANKING`; a
  fixed-effects decomposition: what ranks the
  candidates is learnt apart from what makes one target harder than another; its penalty
  chosen by leave-one-target-out weighted Kendall tau, the order being what it is judged
  on); an interval
  of +- the 95th percentile of the absolute leave-one-target-out residuals (a
  split-conformal band over targets: Lei et al., JASA 2018);
- P(fine-tuning beats training from scratch) and P(negative transfer) (the best strategy's
  verdict is NEGATIVE: fine-tuning loses to scratch beyond its interval, rarer than "does not
  beat scratch"): one L2-regularised proportional-odds model (ordinal logistic regression:
  McCullagh, JRSS B 1980) of the three ordered outcomes negative < neither < beats
  (:func:`_ordinal`): one score and two cut points, so P(negative) + P(beats) < 1 by
  construction and both outcomes inform the one score. Its coefficients on the features
  that say a source fits better (margins, ranks, "above the twin":
  :data:`~transferscope.advise.features.MONOTONE`) are kept >= 0 (L-BFGS-B within
  bounds), its penalty chosen by leave-one-target-out ranked probability score (Brier of
  P(negative) plus Brier of P(beats); its probabilities are judged by their calibration:
  Brier score, ECE), and the threshold of P(negative) at which the advisor flags it by
  leave-one-target-out F1. (Two separate logistic models, the earlier advisor, gave held-out NT F1
  0.46 and Brier 0.138 on the benchmark's 136 cells; this one 0.55 and 0.122.) Where one
  outcome never occurs in the training data, two logistic models on what does, P(negative)
  bounded by 1 - P(beats) (:func:`coherent_negative`);
- per strategy, its test accuracy minus the linear probe's (ridge); the recommended
  strategy is the one predicted best among those the benchmark measured;
- the data and training time transfer saves (ridge on logs, its penalty chosen on held-out
  targets, down to the benchmark's mean alone; intervals like the accuracy's):
  ``data_x``, how many times the target's training data a from-scratch model would need to
  match the fine-tuned accuracy (the effective data transferred of Hernandez et al., "Scaling
  Laws for Transfer", 2021, as a ratio), read off the scratch arm's accuracy at the
  benchmark's two data sizes, linear in log data size; ``time_x``, the scratch arm's training
  time to its selected epoch over the fine-tuned one's (only where the records carry those
  times).

A log size (samples per class, classes, feature width) outside the range it had in the
training data is clipped to that range first (:meth:`Advisor.clip`): linear models
extrapolate without bound, and the benchmark's targets span 2 to 5 classes and 5 to 80
samples per class.

Every example is one (source, target, data size) cell of a benchmark record whose strategies
all finished; leave-one-target-out holds out a target's every source and size at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from transferscope.advise.features import FEATURES, MONOTONE, UNBOUNDED, candidate_features
from transferscope.errors import InputError

RIDGE_ALPHA = 3.0
#: Penalties tried for the within-cell (ranking) ridge, chosen per fit by inner
#: leave-one-target-out weighted Kendall tau (the larger on ties).
RANK_ALPHAS = (0.3, 3.0, 30.0, 300.0, 3000.0)
#: Inverse penalties of the outcome model tried (chosen per fit by inner leave-one-target-out
#: ranked probability score: :func:`_choose_c`).
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
REFERENCE_STRATEGY = "linear_probe"  # strategies are predicted as gains over it
#: Strategy and saving-ratio ridge penalties tried (``inf``: the benchmark's means, no
#: features), chosen on held-out targets.
STRATEGY_ALPHAS = (3.0, 30.0, 300.0, float("inf"))
#: What the level of a target's fine-tuned accuracy is read from: accuracies measured on the
#: target itself (the twin's and the candidate's margins over it and over the raw input),
#: comparable from target to target, and
#: the data size (ranks are within-target by construction; the class count, 2 to 5 on the
#: benchmark, extrapolates badly: with every feature the 95 % held-out error was 0.55, with
#: these 0.13).
LEVEL_FEATURES = ("linear_probe_random", "knn_random", "linear_probe_vs_random", "knn_vs_random",
                  "linear_probe_vs_raw", "knn_vs_raw", "log_per_class")
#: Features left out of the within-cell ridge (what orders the candidates on one target).
#: Feature width is no reason for one candidate to rank above another (the bias the width
#: table measures in the scores): where the widest source of a cell was also the best (MiniLM
#: on text-a), the ridge learnt "wider is better" and, held out, put EfficientNet-Lite1 first
#: on fashion-lo at 8 per class, 11 points below the best source there.
NOT_RANKING = ("log_dim",)
MIN_EXTRA = 6  # examples (from at least 2 targets) to fit data_x or time_x
#: Targets a saving ratio needs before features may enter its model (with fewer, the held-out
#: fits that would choose them see 2 targets or less): its mean alone below that.
MIN_EXTRA_TARGETS = 4
LOGISTIC_C = 1.0
#: Signs of the outcome model's coefficients (+1: >= 0 on the score that raises P(beats) and
#: lowers P(negative)):
#: the :data:`~transferscope.advise.features.MONOTONE` features (on the benchmark, without
#: them the negative-transfer model gave LogME's rank and the probe's margin over the raw
#: input positive weights, i.e. a better-fitting source more likely negative).
MONOTONE_SIGNS = np.array([1.0 if f in MONOTONE else 0.0 for f in FEATURES])
LEVEL = 0.95
SHIPPED = Path(__file__).with_name("advisor.json")


@dataclass
class Examples:
    """Training examples: ``X`` (n, n_features), the truths, and their ``groups`` (target)."""

    X: np.ndarray
    acc: np.ndarray
    beats: np.ndarray
    negative: np.ndarray
    strategy_acc: dict
    best_strategy: list
    groups: list
    keys: list
    cells: np.ndarray = None  # (n,) which (target, size) cell each example is in
    extras: dict = field(default_factory=dict)  # name -> (n,) log ratios, NaN where unknown
    modalities: list = field(default_factory=list)  # (n,) each example's record's modality
    #: (n,) NEGATIVE and holding against scratch at twice its budget (the benchmark's "truly
    #: negative"; False where the budget was not checked)
    robust: np.ndarray = None


#: Log ratios are clipped to +- this (x100 or /100): beyond it the log-linear reading of two
#: data sizes says nothing.
LOG_CLIP = float(np.log(100.0))
#: Scratch accuracy must rise at least this much per e-fold of data for ``data_x`` to be read.
MIN_SLOPE = 0.01


def _log_data_x(rec: dict, size: dict) -> float:
    """log of ``data_x`` for one cell (see the module docstring), NaN when the record has one
    data size or the scratch arm does not improve with data."""
    sizes = sorted((v["per_class"], v["scratch_acc"]) for v in rec["truth"].values()
                   if v.get("per_class") and v.get("scratch_acc") is not None)
    if len(sizes) < 2 or sizes[-1][0] <= sizes[0][0]:
        return float("nan")
    slope = (sizes[-1][1] - sizes[0][1]) / np.log(sizes[-1][0] / sizes[0][0])
    if not slope >= MIN_SLOPE:
        return float("nan")
    return float(np.clip((size["best_acc"] - size["scratch_acc"]) / slope, -LOG_CLIP, LOG_CLIP))


def _log_time_x(rec: dict, size: dict) -> float:
    """log(scratch's time to its selected epoch / the best strategy's), NaN if unrecorded."""
    t = size["strategies"][size["best_strategy"]].get("transfer_best_s")
    b = size.get("scratch_best_s")
    if not t or not b or t <= 0 or b <= 0:
        return float("nan")
    return float(np.clip(np.log(b / t), -LOG_CLIP, LOG_CLIP))


#: The advisor's extra ridge targets: name -> its log ratio for one cell.
EXTRAS = {"data_x": _log_data_x, "time_x": _log_time_x}


def examples(records: list[dict]) -> Examples:
    """One example per complete (pair, data size) cell of ``records``
    (:func:`~transferscope.advise.records.records_from_pairs`), features computed among the
    candidates of the same target and size."""
    by_cell = {}
    for rec in records:
        if "scores" not in rec:
            continue
        for frac, size in rec["truth"].items():
            if size.get("complete"):
                by_cell.setdefault((rec["target"], frac), []).append((rec, size))
    X, acc, beats, neg, best, groups, keys, modality = [], [], [], [], [], [], [], []
    robust = []
    strat, extra, cell_of = {}, {name: [] for name in EXTRAS}, []
    for c, ((target, frac), cell) in enumerate(sorted(by_cell.items())):
        size0 = cell[0][1]
        X.append(candidate_features([r for r, _ in cell], size0["per_class"], size0["classes"]))
        for rec, size in cell:
            acc.append(size["best_acc"])
            beats.append(size["beats_scratch"])
            neg.append(size["verdict"] == "NEGATIVE")
            robust.append(size["verdict"] == "NEGATIVE" and (size["strategies"].get(
                size["best_strategy"]) or {}).get("budget_holds") is True)
            best.append(size["best_strategy"])
            groups.append(target)
            cell_of.append(c)
            keys.append((target, rec["source"], frac))
            modality.append(rec.get("modality"))
            for name, fn in EXTRAS.items():
                extra[name].append(fn(rec, size))
            for s, arm in size["strategies"].items():
                strat.setdefault(s, {})[len(acc) - 1] = arm["transfer_acc"]
    n = len(acc)
    strategy_acc = {s: np.array([v.get(i, np.nan) for i in range(n)]) for s, v in strat.items()}
    return Examples(np.vstack(X) if X else np.zeros((0, len(FEATURES))), np.array(acc, float),
                    np.array(beats, bool), np.array(neg, bool), strategy_acc, best, groups,
                    keys, np.array(cell_of, int), {k: np.array(v, float) for k, v in extra.items()},
                    modality, np.array(robust, bool))


def _strategy_models(z, strategy_acc: dict, alpha, modalities=None) -> dict:
    """Per strategy, a ridge (penalty ``alpha``; ``inf``: intercept only) on its accuracy
    minus the linear probe's (``strategy_acc``: ``{strategy: (n,)}``, NaN where not
    measured); the linear probe 0 (a study without it: its most measured strategy).
    Strategies measured on fewer than 4 examples are left out. With ``modalities`` (n,
    each example's; none of them None) each model records the ``modalities`` it was
    measured on: :meth:`Advisor.predict` recommends it only there."""
    if not strategy_acc:
        return {}
    ref = REFERENCE_STRATEGY if REFERENCE_STRATEGY in strategy_acc else min(
        strategy_acc, key=lambda s: (-np.isfinite(strategy_acc[s]).sum(), s))
    lp = strategy_acc[ref]
    out = {}
    for s, y in strategy_acc.items():
        if s == ref:
            continue
        ok = np.isfinite(y) & np.isfinite(lp)
        if ok.sum() >= 4:
            sc, sb = _ridge_or_mean(z[ok], y[ok] - lp[ok], alpha)
            out[s] = {"coef": list(map(float, sc)), "intercept": sb}
    out[ref] = {"coef": [0.0] * z.shape[1], "intercept": 0.0}
    if modalities is not None and len(modalities) and None not in modalities:
        kinds = np.asarray(modalities)
        for s in out:
            out[s]["modalities"] = sorted(set(kinds[np.isfinite(strategy_acc[s])]))
    return out


def measured_pick(strategy_acc: dict, i: int, predicted: dict) -> str | None:
    """The strategy predicted best for example ``i`` among those its record measured
    (how a pick can be scored against the benchmark's truth)."""
    names = [s for s in sorted(predicted) if s in strategy_acc
             and np.isfinite(strategy_acc[s][i])]
    return max(names, key=lambda s: predicted[s]) if names else None


def _choose_strategy_alpha(z, ex, groups) -> float:
    """The strategy penalty from :data:`STRATEGY_ALPHAS` whose picks are right most often on
    held-out training targets (the larger penalty on ties); ``inf`` with fewer than 3
    targets."""
    if len(np.unique(groups)) < 3:
        return float("inf")
    best, best_acc = float("inf"), -1.0
    for alpha in sorted(STRATEGY_ALPHAS, reverse=True):
        right = []
        for g in np.unique(groups):
            held = groups == g
            kept = {s: v[~held] for s, v in ex.strategy_acc.items()}
            models = _strategy_models(z[~held], kept, alpha)
            for i in np.flatnonzero(held):
                pred = {s: float(z[i] @ np.asarray(m["coef"]) + m["intercept"])
                        for s, m in models.items()}
                right.append(measured_pick(ex.strategy_acc, i, pred) == ex.best_strategy[i])
        acc = float(np.mean(right))
        if acc > best_acc + 1e-12:
            best, best_acc = alpha, acc
    return best


def _ridge_or_mean(z, y, alpha):
    """Ridge coefficients and intercept; ``alpha = inf``: no coefficients, the mean alone."""
    if np.isinf(alpha):
        return np.zeros(z.shape[1]), float(y.mean())
    return _ridge(z, y, alpha)


def _choose_extra_alpha(z, y, groups) -> float:
    """The penalty from :data:`STRATEGY_ALPHAS` with the lowest leave-one-target-out squared
    error (``inf``, the training mean alone, when the features do not help on unseen
    targets, and with fewer than :data:`MIN_EXTRA_TARGETS` targets)."""
    if len(np.unique(groups)) < MIN_EXTRA_TARGETS:
        return float("inf")
    best, best_err = float("inf"), np.inf
    for alpha in sorted(STRATEGY_ALPHAS, reverse=True):
        err = 0.0
        for g in np.unique(groups):
            held = groups == g
            c, b = _ridge_or_mean(z[~held], y[~held], alpha)
            err += float(((z[held] @ c + b - y[held]) ** 2).sum())
        if err < best_err - 1e-12:
            best, best_err = alpha, err
    return best


def _choose_rank_alpha(dz, dy, cells, groups) -> float:
    """The within-cell ridge penalty from :data:`RANK_ALPHAS` whose held-out candidate order
    agrees best with the measured accuracies: mean weighted Kendall tau (Vigna 2015) over the
    (target, size) cells of each training target held out in turn (the larger penalty on
    ties); :data:`RIDGE_ALPHA` with fewer than 3 targets.

    ``dz`` (n, n_features) and ``dy`` (n,) are the within-cell deviations of the features and
    the accuracy, ``cells`` and ``groups`` (n,) each example's cell and target."""
    from scipy.stats import weightedtau

    if len(np.unique(groups)) < 3:
        return RIDGE_ALPHA
    best, best_tau = RIDGE_ALPHA, -np.inf
    for alpha in sorted(RANK_ALPHAS, reverse=True):
        taus = []
        for g in np.unique(groups):
            held = groups == g
            coef = _ridge(dz[~held], dy[~held], alpha)[0]
            pred = dz[held] @ coef
            for c in np.unique(cells[held]):
                m = cells[held] == c
                if m.sum() >= 2 and np.ptp(pred[m]) > 0 and np.ptp(dy[held][m]) > 0:
                    taus.append(weightedtau(pred[m], dy[held][m])[0])
        tau = float(np.mean(taus)) if taus else -np.inf
        if tau > best_tau + 1e-12:
            best, best_tau = alpha, tau
    return best


def _cell_means(z, cells=None) -> np.ndarray:
    """Each row replaced by the mean of its cell's rows (one cell by default)."""
    cells = np.zeros(len(z), int) if cells is None else np.asarray(cells)
    out = np.empty_like(z)
    for c in np.unique(cells):
        out[cells == c] = z[cells == c].mean(axis=0)
    return out


def _ridge(z, y, alpha):
    a = z.T @ z + alpha * np.eye(z.shape[1])
    coef = np.linalg.solve(a, z.T @ (y - y.mean()))
    return coef, float(y.mean())


def _logistic(z, y, c, signs=None):
    """L2-penalised logistic regression (penalty 1/(2C) ||w||^2, intercept free): Newton's
    method, or with ``signs`` (shape (n_features,): +1 a coefficient kept >= 0, -1 <= 0, 0
    free) L-BFGS-B within those bounds (Byrd et al., SIAM J. Sci. Comput. 1995)."""
    zz = np.c_[z, np.ones(len(z))]
    w = np.zeros(zz.shape[1])
    pen = np.r_[np.full(z.shape[1], 1.0 / c), 0.0]
    if signs is not None and np.any(signs):
        from scipy.optimize import minimize

        def loss(w):
            t = zz @ w
            p = 1.0 / (1.0 + np.exp(-t))
            f = np.sum(np.logaddexp(0.0, t) - y * t) + 0.5 * np.sum(pen * w * w)
            return f, zz.T @ (p - y) + pen * w

        bounds = [(0.0, None) if s > 0 else (None, 0.0) if s < 0 else (None, None)
                  for s in signs] + [(None, None)]
        w = minimize(loss, w, jac=True, method="L-BFGS-B", bounds=bounds,
                     options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10}).x
        return w[:-1], float(w[-1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-zz @ w))
        g = zz.T @ (p - y) + pen * w
        h = (zz * (p * (1 - p))[:, None]).T @ zz + np.diag(pen) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w[:-1], float(w[-1])


def _ordinal_loss(t, z, level, pen):
    """Penalised negative log-likelihood of the proportional-odds model and its gradient
    (``t``: coefficients, the first cut point, the log of the gap to the second)."""
    d = z.shape[1]
    w, c1, gap = t[:d], t[d], np.exp(t[d + 1])
    s = z @ w
    a, b = c1 - s, c1 + gap - s  # P(level <= 0) = sigma(a), P(level <= 1) = sigma(b)
    sa, sb = 1.0 / (1.0 + np.exp(-a)), 1.0 / (1.0 + np.exp(-b))
    lo, mid, hi = level == 0, level == 1, level == 2
    # log sigma(a); log(sigma(b) - sigma(a)) = b + log(1 - e^(a - b)) - log(1 + e^a)
    # - log(1 + e^b); log(1 - sigma(b)) = -log(1 + e^b)
    ll = (-np.logaddexp(0.0, -a[lo]).sum()
          + (b[mid] + np.log(-np.expm1(a[mid] - b[mid])) - np.logaddexp(0.0, a[mid])
             - np.logaddexp(0.0, b[mid])).sum()
          - np.logaddexp(0.0, b[hi]).sum())
    da, db = np.zeros(len(s)), np.zeros(len(s))  # d log-likelihood / d a, d b
    da[lo] = 1.0 - sa[lo]
    between = np.maximum(sb[mid] - sa[mid], 1e-300)
    da[mid] = -sa[mid] * (1.0 - sa[mid]) / between
    db[mid] = sb[mid] * (1.0 - sb[mid]) / between
    db[hi] = -sb[hi]
    grad = np.r_[-z.T @ (da + db), (da + db).sum(), db.sum() * gap]
    return -ll + 0.5 * np.sum(pen * w * w), -grad + np.r_[pen * w, 0.0, 0.0]


def _ordinal(z, level, c, signs=None):
    """Proportional-odds (ordinal logistic) regression of ``level`` (0: negative transfer,
    1: fine-tuning neither beats scratch nor loses beyond its interval, 2: it beats scratch)
    on ``z`` (McCullagh, "Regression models for ordinal data", JRSS B 1980): one score
    ``s = z @ w`` and two cut points ``c1 < c2``, P(level <= k) = sigma(c_{k+1} - s).

    Penalty 1/(2C) ||w||^2, cut points free; with ``signs`` (shape (n_features,)), +1 keeps a
    coefficient >= 0 (a larger feature never makes a better outcome less likely), -1 <= 0;
    L-BFGS-B within those bounds.

    Parameters
    ----------
    z : ndarray of shape (n, n_features)
        Standardised features.
    level : ndarray of int, shape (n,)
        Each example's outcome, 0, 1 or 2 (:func:`_levels`).
    c : float
        Inverse penalty.
    signs : ndarray of shape (n_features,), optional
        Sign constraints (+1, -1 or 0: free).

    Returns
    -------
    w : ndarray of shape (n_features,)
    c1, c2 : float
        So that P(negative) = sigma(c1 - s) and P(beats) = sigma(s - c2): the same
        ``{coef, intercept}`` pairs as two logistic models, ``(-w, c1)`` and ``(w, -c2)``,
        coherent by construction (P(negative) + P(beats) < 1).
    """
    from scipy.optimize import minimize

    d = z.shape[1]
    pen = np.full(d, 1.0 / c)
    signs = np.zeros(d) if signs is None else np.asarray(signs)
    counts = np.array([(level <= k).mean() for k in (0, 1)])
    cuts = np.log(np.clip(counts, 1e-3, 1 - 1e-3) / (1 - np.clip(counts, 1e-3, 1 - 1e-3)))
    t0 = np.r_[np.zeros(d), cuts[0], np.log(max(cuts[1] - cuts[0], 1e-3))]
    bounds = [(0.0, None) if g > 0 else (None, 0.0) if g < 0 else (None, None)
              for g in signs] + [(None, None), (-30.0, 30.0)]
    t = minimize(_ordinal_loss, t0, args=(z, np.asarray(level), pen), jac=True,
                 method="L-BFGS-B", bounds=bounds,
                 options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10}).x
    return t[:d], float(t[d]), float(t[d] + np.exp(t[d + 1]))


def _levels(beats, negative) -> np.ndarray:
    """The ordered outcome (0 negative, 1 neither, 2 beats scratch) of each example."""
    return np.where(np.asarray(negative, bool), 0, np.where(np.asarray(beats, bool), 2, 1))


def _outcome_models(z, beats, negative, c, signs=None):
    """``(beats, negative)``: the ``{coef, intercept}`` of P(beats scratch) and of
    P(negative transfer) (:func:`_ordinal` on the three ordered outcomes; where one of them
    never occurs, two logistic models on what does, :func:`_binary`, P(negative) with
    ``signs`` negated)."""
    level = _levels(beats, negative)
    if len(np.unique(level)) == 3:
        w, c1, c2 = _ordinal(z, level, c, signs)
        return {"coef": w, "intercept": -c2}, {"coef": -w, "intercept": c1}
    neg_signs = None if signs is None else -np.asarray(signs)
    w, b = _binary(z, np.asarray(beats, bool), c, signs)
    nw, nb = _binary(z, np.asarray(negative, bool), c, neg_signs)
    return {"coef": w, "intercept": b}, {"coef": nw, "intercept": nb}


def _sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def _inner_probabilities(z, beats, negative, groups, c, signs=None):
    """Leave-one-group-out (P(beats), P(negative)) inside a training set, each (n,)."""
    p_beats, p_neg = np.full(len(z), np.nan), np.full(len(z), np.nan)
    for g in np.unique(groups):
        held = groups == g
        mb, mn = _outcome_models(z[~held], beats[~held], negative[~held], c, signs)
        p_beats[held] = _sigmoid(z[held] @ mb["coef"] + mb["intercept"])
        p_neg[held] = coherent_negative(_sigmoid(z[held] @ mn["coef"] + mn["intercept"]),
                                        p_beats[held])
    return p_beats, p_neg


def _choose_c(z, beats, negative, groups, signs=None):
    """The inverse penalty from :data:`C_GRID` with the lowest leave-one-target-out ranked
    probability score on the training set (the stronger penalty on ties): for the three
    ordered outcomes, Brier(P(negative)) + Brier(P(beats)) (Epstein, J. Appl. Meteor. 1969);
    :data:`LOGISTIC_C` with fewer than 3 targets.

    Returns ``(c, p_negative)``: the penalty and the held-out P(negative) at it, shape (n,),
    for :func:`_choose_threshold` (None with fewer than 3 targets)."""
    if len(np.unique(groups)) < 3:
        return LOGISTIC_C, None
    beats, negative = np.asarray(beats, float), np.asarray(negative, float)
    scores, held = [], []
    for c in C_GRID:
        pb, pn = _inner_probabilities(z, beats, negative, groups, c, signs)
        scores.append(np.mean((pb - beats) ** 2) + np.mean((pn - negative) ** 2))
        held.append(pn)
    k = int(np.argmin(np.round(scores, 12)))
    return float(C_GRID[k]), held[k]


def coherent_negative(p_negative, p_beats):
    """P(negative transfer) bounded by P(fine-tuning does not beat scratch).

    A NEGATIVE verdict (scratch better beyond the gain's interval) is one way of not beating
    scratch, so P(negative) <= 1 - P(beats) (the Frechet bound); the two logistic models are
    fitted apart and need not respect it on their own, e.g. a candidate given P(beats) 0.6
    and P(negative) 0.9.

    Parameters
    ----------
    p_negative, p_beats : array-like of shape (n,)
        The two models' probabilities for the same candidates.

    Returns
    -------
    ndarray of shape (n,)
    """
    return np.minimum(np.asarray(p_negative, float), 1.0 - np.asarray(p_beats, float))


def best_f1_threshold(p, y, decimals: int | None = None) -> tuple[float, float]:
    """The threshold on ``p`` whose flags ``p >= t`` have the best F1 against ``y`` (the
    higher threshold on ties; thresholds: the distinct values of ``p``, rounded to
    ``decimals`` when given, as the advisor stores its threshold).

    Parameters
    ----------
    p : array-like of shape (n,)
        Scores, e.g. P(negative transfer).
    y : array-like of bool, shape (n,)
        The outcomes flagged for; at least one True.

    Returns
    -------
    threshold, f1 : float
    """
    p, y = np.asarray(p, float), np.asarray(y, bool)
    best, best_f1 = 0.5, -1.0
    for t in np.unique(p if decimals is None else np.round(p, decimals))[::-1]:
        flag = p >= t
        f1 = 2.0 * int((flag & y).sum()) / (flag.sum() + y.sum())
        if f1 > best_f1 + 1e-12:
            best, best_f1 = float(t), f1
    return best, best_f1


def _choose_threshold(z, beats, negative, groups, c, signs=None, p_negative=None) -> float:
    """The P(negative transfer) at or above which the advisor flags it: the threshold with
    the best leave-one-target-out F1 on the training set (:func:`best_f1_threshold`), on the
    probabilities the advisor predicts (:func:`_outcome_models` at inverse penalty ``c``;
    ``p_negative``: those held-out probabilities when already computed, as
    :func:`_choose_c` does); 0.5 with fewer than 3 targets or no negative example."""
    y = np.asarray(negative, bool)
    if len(np.unique(groups)) < 3 or not y.any():
        return 0.5
    if p_negative is None:
        p_negative = _inner_probabilities(z, np.asarray(beats, bool), y, groups, c, signs)[1]
    return best_f1_threshold(p_negative, y, decimals=6)[0]


def _binary(z, y, c, signs=None):
    """Logistic coefficients for outcome ``y`` (signs: see :func:`_logistic`); with one
    outcome only, none and the smoothed log-odds of its rate as the intercept."""
    if y.all() or not y.any():
        rate = (y.mean() * len(y) + 0.5) / (len(y) + 1.0)
        return np.zeros(z.shape[1]), float(np.log(rate / (1 - rate)))
    return _logistic(z, y.astype(float), c, signs)


@dataclass
class Advisor:
    """A fitted predictor (see the module docstring); :meth:`to_json` / :func:`load_advisor`."""

    features: list
    mean: list
    scale: list
    accuracy: dict  # coef, intercept, halfwidth
    beats: dict  # coef, intercept
    negative: dict  # coef, intercept
    strategies: dict  # name -> coef, intercept
    trained_on: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)  # data_x / time_x: coef, intercept, halfwidth
    #: each feature's smallest and largest training value (None: never measured); inputs
    #: are clipped to them (:meth:`clip`). Empty in an advisor written before they were kept.
    lo: list = field(default_factory=list)
    hi: list = field(default_factory=list)
    #: how the advisor fared held out, per modality of its training targets
    #: (:func:`~transferscope.advise.evaluation.by_modality`'s rows by modality); set by
    #: :meth:`attach_held_out`, empty when it was not evaluated
    held_out: dict = field(default_factory=dict)

    def attach_held_out(self, rows: list[dict]) -> None:
        """Keep the leave-one-target-out evaluation within each modality
        (:func:`~transferscope.advise.evaluation.by_modality`'s rows) with the advisor, so that
        :func:`~transferscope.advise.api.advise` can say how far to trust it on a target of
        that kind.

        Parameters
        ----------
        rows : list of dict
            One per modality (``modality``, ``targets``, ``examples``, ``brier``, ``ece``,
            ``ece_calibrated``, ``ece_p``, ``nt_actual``, ``nt_flagged``, ``nt_caught``,
            ``precision``, ``recall``).
        """
        keep = ("targets", "examples", "brier", "ece", "ece_calibrated", "ece_p",
                "nt_actual", "nt_flagged", "nt_caught", "precision", "recall")
        self.held_out = {r["modality"]: {k: (None if isinstance(r[k], float) and r[k] != r[k]
                                             else r[k]) for k in keep}
                         for r in rows}

    def clip(self, x):
        """``x`` with its unbounded features (:data:`~transferscope.advise.features.UNBOUNDED`:
        the log sizes) clipped to the range they had in the advisor's training data.

        The models are linear in the features, so outside that range they extrapolate
        without bound: a target of 100 classes, when the benchmark's have 2 to 5, would move
        every candidate's P(beats scratch) by the class count's coefficient times 13 of its
        standard deviations. Clipped, such a target is read as the benchmark's nearest one.
        The other features (accuracies, margins, ranks, indicators) are bounded by
        construction and left as they are: clipping them too made the held-out accuracy
        errors larger (95th percentile 0.127 to 0.158), a large margin over the twin meaning
        a higher accuracy beyond the range as within it.

        Parameters
        ----------
        x : array-like of shape (n, len(features))

        Returns
        -------
        clipped : ndarray of shape (n, len(features))
            NaN (a missing score) stays NaN.
        outside : ndarray of bool, shape (n, len(features))
            Where a value lay outside the range.
        """
        x = np.asarray(x, float)
        if not self.lo:
            return x, np.zeros(x.shape, bool)
        lo = np.array([np.nan if v is None else v for v in self.lo], float)
        hi = np.array([np.nan if v is None else v for v in self.hi], float)
        with np.errstate(invalid="ignore"):
            outside = ((x < lo) | (x > hi)) & np.isin(self.features, UNBOUNDED)
        return np.where(outside, np.clip(x, lo, hi), x), outside

    def _z(self, x):
        """The standardised, clipped features (missing: 0, the training mean) and where they
        were clipped."""
        x, outside = self.clip(x)
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return np.where(np.isfinite(z), z, 0.0), outside

    def predict(self, x, cells=None, modality: str | None = None) -> dict:
        """Predictions for feature rows.

        Parameters
        ----------
        x : array-like of shape (n, len(features))
            Candidates' features (:func:`~transferscope.advise.features.candidate_features`).
        cells : array-like of shape (n,), optional
            Which rows are candidates for the same target and data size (default: all).
        modality : str, optional
            The target's kind (``image``, ``text``, ``series``, ...): a strategy whose model
            records the modalities it was measured on is predicted and recommended only for
            those (no extrapolation from, e.g., LoRA on image models to a text model);
            default: every strategy.

        Returns
        -------
        dict
            ``acc``, ``acc_lo``, ``acc_hi``, ``p_beats``, ``p_negative`` (arrays of shape
            (n,)), ``flag_negative`` (P(negative) at or above the advisor's threshold),
            ``strategy_acc`` (``{strategy: (n,)}``), ``strategy`` (list of n names) and
            ``unmeasured_strategies`` (those not measured on ``modality``: left out, unless
            none was, when every strategy is extrapolated to it); per
            fitted extra (``data_x``, ``time_x``) the ratio and its ``_lo`` / ``_hi`` (95 %);
            ``outside`` (bool array of shape (n, len(features))): the features outside the
            training data's range, clipped to it (:meth:`clip`).
        """
        z, outside = self._z(x)
        acc = z @ np.asarray(self.accuracy["coef"]) + self.accuracy["intercept"]
        if "level_coef" in self.accuracy:  # within the candidate set + its level
            zm = _cell_means(z, cells)
            acc = acc + zm @ (np.asarray(self.accuracy["level_coef"])
                              - np.asarray(self.accuracy["coef"]))
        hw = self.accuracy["halfwidth"]
        logit = z @ np.asarray(self.beats["coef"]) + self.beats["intercept"]
        neg = z @ np.asarray(self.negative["coef"]) + self.negative["intercept"]
        every = {s: z @ np.asarray(m["coef"]) + m["intercept"]
                 for s, m in self.strategies.items()}
        per = {s: v for s, v in every.items() if modality is None
               or modality in self.strategies[s].get("modalities", [modality])}
        unmeasured = sorted(set(every) - set(per))
        per = per or every  # none measured on this kind of target: extrapolate from all
        names = sorted(per)
        best = [names[i] for i in np.argmax(np.stack([per[s] for s in names]), axis=0)] \
            if names else [None] * len(z)
        p_beats = 1.0 / (1.0 + np.exp(-logit))
        p_neg = coherent_negative(1.0 / (1.0 + np.exp(-neg)), p_beats)
        out = {"acc": acc, "acc_lo": acc - hw, "acc_hi": acc + hw,
               "p_beats": p_beats, "p_negative": p_neg,
               "flag_negative": p_neg >= self.negative.get("threshold", 0.5),
               "strategy_acc": per, "strategy": best, "unmeasured_strategies": unmeasured,
               "outside": outside}
        for name, m in self.extras.items():
            log = z @ np.asarray(m["coef"]) + m["intercept"]
            out[f"log_{name}"] = log
            for suffix, shift in (("", 0.0), ("_lo", -m["halfwidth"]), ("_hi", m["halfwidth"])):
                out[name + suffix] = np.exp(np.clip(log + shift, -LOG_CLIP, LOG_CLIP))
        return out

    def to_json(self, path) -> Path:
        """Write the advisor as JSON (plain lists and numbers)."""
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path


def fit_advisor(records: list[dict], *, alpha: float = RIDGE_ALPHA,
                rank_alpha: float | None = None, c: float | None = None,
                strategy_alpha: float | None = None, halfwidth: float | None = None,
                source: str = "", width: str = "none") -> Advisor:
    """Fit the advisor on benchmark records.

    Parameters
    ----------
    records : list of dict
        :func:`~transferscope.advise.records.records_from_pairs` records.
    alpha : float
        Ridge penalty (on standardised features) of the cell level's ridge.
    rank_alpha : float, optional
        Ridge penalty of the within-cell deviations (what orders the candidates); default:
        chosen from :data:`RANK_ALPHAS` by leave-one-target-out weighted tau on ``records``
        (:func:`_choose_rank_alpha`).
    c : float, optional
        Inverse penalty of the outcome model (P(beats), P(negative): :func:`_ordinal`);
        default: chosen from :data:`C_GRID` by leave-one-target-out ranked probability score
        on ``records`` (:data:`LOGISTIC_C` with fewer than 3 targets). The
        negative-transfer flag's threshold is chosen likewise, for F1.
    strategy_alpha : float, optional
        The strategy ridges' penalty; default: chosen from :data:`STRATEGY_ALPHAS` by how
        often the pick is right on held-out targets.
    halfwidth : float, optional
        The accuracy interval's half-width; default: from leave-one-target-out residuals
        (:func:`loto_predictions`), or 0.1 with fewer than 3 targets.
    source : str
        Where the records came from (recorded in ``trained_on``).
    width : str
        The width transform the records' scores were computed at (recorded in
        ``trained_on``: ``advise`` scores at it by default).

    Returns
    -------
    Advisor

    Raises
    ------
    InputError
        With fewer than 4 complete examples, or without both outcomes of "beats scratch".
    """
    ex = examples(records)
    if len(ex.acc) < 4:
        raise InputError(f"Expected at least 4 finished (source, target, size) cells with "
                         f"every strategy to fit the advisor, got {len(ex.acc)}; let the "
                         "study finish more runs")
    finite = np.isfinite(ex.X)
    count = finite.sum(axis=0)
    x0 = np.where(finite, ex.X, 0.0)
    mean = x0.sum(axis=0) / np.maximum(count, 1)  # a feature never measured: 0
    scale = np.sqrt((np.where(finite, ex.X - mean, 0.0) ** 2).sum(axis=0)
                    / np.maximum(count, 1))
    scale = np.where(scale > 1e-12, scale, 1.0)
    lo = [float(np.min(ex.X[finite[:, j], j])) if count[j] else None
          for j in range(ex.X.shape[1])]
    hi = [float(np.max(ex.X[finite[:, j], j])) if count[j] else None
          for j in range(ex.X.shape[1])]
    z = np.where(np.isfinite(ex.X), (ex.X - mean) / scale, 0.0)
    # accuracy = the cell's level + each candidate's place within it: a ridge on the
    # within-cell deviations (what ranks the candidates) and one on the cell means (what
    # places the target), so that differences between targets do not drown the ranking
    zm = _cell_means(z, ex.cells)
    ym = _cell_means(ex.acc[:, None], ex.cells)[:, 0]
    groups = np.asarray(ex.groups)
    dz = (z - zm) * ~np.isin(FEATURES, NOT_RANKING)  # their coefficients: exactly 0
    r_alpha = rank_alpha if rank_alpha is not None else _choose_rank_alpha(
        dz, ex.acc - ym, ex.cells, groups)
    coef = _ridge(dz, ex.acc - ym, r_alpha)[0]
    level, b = _ridge(zm * np.isin(FEATURES, LEVEL_FEATURES), ym, alpha)
    # the coefficients of margins, ranks and "above the twin" keep the sign that says a
    # source which fits the target better does not make transfer less likely to pay off
    signs = MONOTONE_SIGNS
    c_out, held_neg = (c, None) if c is not None else _choose_c(z, ex.beats, ex.negative,
                                                                groups, signs)
    m_beats, m_neg = _outcome_models(z, ex.beats, ex.negative, c_out, signs)
    threshold = _choose_threshold(z, ex.beats, ex.negative, groups, c_out, signs, held_neg)
    # each strategy's accuracy minus the linear probe's on the same cell (what decides between
    # them; the level they share cancels), the linear probe itself 0; the penalty chosen by
    # how often the pick is right on held-out training targets (infinite: the benchmark's
    # mean gains alone, when the features do not tell strategies apart on unseen targets)
    s_alpha = _choose_strategy_alpha(z, ex, groups) if strategy_alpha is None \
        else strategy_alpha
    strategies = _strategy_models(z, ex.strategy_acc, s_alpha, ex.modalities)
    extras = {}
    for name, y in ex.extras.items():
        ok = np.isfinite(y)
        if ok.sum() >= MIN_EXTRA and len({g for g, k in zip(ex.groups, ok, strict=True)
                                          if k}) >= 2:
            e_alpha = _choose_extra_alpha(z[ok], y[ok], groups[ok])
            ec, eb = _ridge_or_mean(z[ok], y[ok], e_alpha)
            extras[name] = {"coef": ec.tolist(), "intercept": eb, "halfwidth": LOG_CLIP,
                            "examples": int(ok.sum()),
                            "alpha": e_alpha if np.isfinite(e_alpha) else "inf"}
    if halfwidth is None:
        halfwidth = 0.1
        if len(set(ex.groups)) >= 3:
            pred = loto_predictions(records, alpha=alpha, rank_alpha=r_alpha, c=c,
                                    halfwidth=0.0, inner=False)
            halfwidth = float(np.quantile(np.abs(pred["acc"] - ex.acc), LEVEL))
            for name, m in extras.items():
                res = np.abs(pred[f"log_{name}"] - ex.extras[name])
                res = res[np.isfinite(res)]
                if len(res) >= MIN_EXTRA:
                    m["halfwidth"] = float(np.quantile(res, LEVEL))
    blob = json.dumps([[list(k) for k in ex.keys], ex.X.round(12).tolist(), ex.acc.tolist()],
                      default=str)
    return Advisor(features=list(FEATURES), mean=mean.tolist(), scale=scale.tolist(),
                   accuracy={"coef": coef.tolist(), "level_coef": level.tolist(),
                             "intercept": b, "halfwidth": halfwidth},
                   beats={"coef": np.asarray(m_beats["coef"]).tolist(),
                          "intercept": float(m_beats["intercept"])},
                   negative={"coef": np.asarray(m_neg["coef"]).tolist(),
                             "intercept": float(m_neg["intercept"]), "threshold": threshold},
                   strategies=strategies,
                   extras=extras, lo=lo, hi=hi,
                   trained_on={"source": source, "examples": len(ex.acc),
                               "targets": len(set(ex.groups)),
                               "fingerprint": hashlib.sha256(blob.encode()).hexdigest()[:16],
                               "alpha": alpha, "rank_alpha": r_alpha,
                               "c_beats": c_out, "c_negative": c_out,
                               "strategy_alpha": s_alpha if np.isfinite(s_alpha) else "inf",
                               "width": width})


def loto_predictions(records: list[dict], **fit_options) -> dict:
    """Leave-one-target-out predictions for every example of ``records``: each target's
    examples predicted by an advisor fitted on the other targets.

    Returns
    -------
    dict
        ``examples`` (:class:`Examples`), and arrays of shape (n,) ``acc``, ``acc_lo``,
        ``acc_hi``, ``p_beats``, ``p_negative``, ``log_data_x`` and ``log_time_x`` (NaN where
        the held-out fit has no such model), plus ``strategy`` (list of n names: the pick
        among the strategies the example's record measured) and ``strategy_acc``.
    """
    ex = examples(records)
    n = len(ex.acc)
    out = {"acc": np.full(n, np.nan), "acc_lo": np.full(n, np.nan),
           "acc_hi": np.full(n, np.nan), "p_beats": np.full(n, np.nan),
           "p_negative": np.full(n, np.nan), "flag_negative": np.zeros(n, bool),
           **{f"log_{name}": np.full(n, np.nan) for name in EXTRAS},
           "strategy": [None] * n, "strategy_acc": {}, "examples": ex}
    groups = np.array(ex.groups)
    inner = fit_options.pop("inner", True)
    opts = {**fit_options, "halfwidth": fit_options.get("halfwidth") or 0.0}
    if not inner:  # inside a fit, for its halfwidths: no searches they do not depend on
        opts["c"] = LOGISTIC_C if opts.get("c") is None else opts["c"]
        opts.setdefault("strategy_alpha", float("inf"))
    for g in sorted(set(ex.groups)):
        held = [r for r in records if r["target"] != g]
        adv = fit_advisor(held, **opts)
        idx = np.flatnonzero(groups == g)
        p = adv.predict(ex.X[idx], ex.cells[idx])
        for k in ("acc", "acc_lo", "acc_hi", "p_beats", "p_negative", "flag_negative",
                  *(f"log_{name}" for name in adv.extras)):
            out[k][idx] = p[k]
        for s, v in p["strategy_acc"].items():
            out["strategy_acc"].setdefault(s, np.full(n, np.nan))[idx] = v
        for j, i in enumerate(idx):  # scored among the strategies its record measured
            out["strategy"][i] = measured_pick(
                ex.strategy_acc, i, {s: v[j] for s, v in p["strategy_acc"].items()})
    return out


def load_advisor(path=None) -> Advisor:
    """The advisor stored at ``path`` (default: the one shipped with the package).

    Raises
    ------
    InputError
        When the file is missing or not an advisor of this version's features.
    """
    path = Path(path) if path else SHIPPED
    try:
        data = json.loads(path.read_text())
        adv = Advisor(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"Expected an advisor JSON file (tscope advise --fit writes one), "
                         f"got {path}: {exc}") from None
    if list(adv.features) != list(FEATURES):
        raise InputError(f"Expected an advisor over this version's features, got one over "
                         f"{len(adv.features)} other features in {path}; refit it with "
                         "tscope advise --fit")
    return adv
