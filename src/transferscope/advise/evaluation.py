"""How often is the advice right? Leave-one-target-out on benchmark records, for the advisor
and for every single metric.

Per (target, data size) cell of candidates:

- weighted Kendall tau (``scipy.stats.weightedtau``, Vigna 2015) between the predicted order
  (the advisor's predicted accuracy, or a metric's value) and the measured fine-tuned accuracy;
- top-1 regret: accuracy lost by fine-tuning the top-predicted candidate instead of the best;

then over all examples:

- negative transfer (the best strategy's verdict is NEGATIVE): precision, recall and F1 of the
  flags (advisor: P(negative transfer) at or above its threshold, chosen on the training
  targets for F1; a metric: below its random-init twin or the raw
  input, as ``tscope study evaluate`` flags);
- advisor only: calibration of P(beats scratch) against "the best strategy's gain > 0": Brier
  score, expected calibration error over 10 equal-width bins (Naeini et al., AAAI 2015) and
  the reliability bins, with the ECE a calibrated predictor would show at this sample size
  (consistency resampling, Brocker & Smith 2007); strategy accuracy (recommended = measured
  best) and regret (accuracy lost to the best) against "always linear probe", "always full
  fine-tuning" and the layer rule's four quadrants.

Means over cells come with 95 % BCa bootstrap intervals over the cells
(:func:`transferscope.verdict.mean_interval`: none with fewer than 5 cells); F1, precision
and recall with a percentile bootstrap over examples (draws where they are undefined are
dropped and counted); the advisor's Brier score, ECE, strategy accuracy and its margins over
"always linear probe" and "always full" with a percentile bootstrap over the held-out
targets (each draw resamples whole targets, since a target's examples share its errors;
:func:`target_interval`).
"""

from __future__ import annotations

import numpy as np

from transferscope.advise.model import loto_predictions
from transferscope.verdict import MIN_BOOT_ITEMS, N_BOOT, bootstrap_interval, mean_interval

BINS = 10


def _cells(ex):
    """(target, size) -> indices of its examples."""
    out = {}
    for i, (target, _, frac) in enumerate(ex.keys):
        out.setdefault((target, frac), []).append(i)
    return {k: np.array(v) for k, v in out.items()}


def _rank_stats(pred, acc, cells):
    import scipy.stats

    taus, regrets = [], []
    for idx in cells.values():
        p, a = pred[idx], acc[idx]
        ok = np.isfinite(p)
        if ok.sum() < 2:
            continue
        p, a = p[ok], a[ok]
        taus.append(scipy.stats.weightedtau(p, a)[0] if np.ptp(p) > 0 and np.ptp(a) > 0
                    else np.nan)
        regrets.append(a.max() - a[np.argmax(p)])
    return np.array(taus, float), np.array(regrets, float)


def _f1(flags, actual):
    tp = float((flags & actual).sum())
    if not flags.sum() or not actual.sum():
        return float("nan"), float("nan"), float("nan")
    precision, recall = tp / flags.sum(), tp / actual.sum()
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


def _bin_of(p, bins: int):
    """The equal-width bin edges (bins + 1,) and each probability's bin (n,)."""
    edges = np.linspace(0, 1, bins + 1)
    return edges, np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)


def _nanmean(v) -> float:
    """The mean of the finite values, NaN when there are none."""
    v = np.asarray(v, float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def calibration(p, y, bins: int = BINS) -> dict:
    """Brier score, expected calibration error and reliability bins of probabilities ``p``
    (shape (n,)) for binary outcomes ``y`` (shape (n,))."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    edges, which = _bin_of(p, bins)
    rel, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            rel.append({"bin": [float(edges[b]), float(edges[b + 1])], "n": int(m.sum()),
                        "mean_p": float(p[m].mean()), "observed": float(y[m].mean())})
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return {"brier": float(np.mean((p - y) ** 2)), "ece": float(ece), "reliability": rel}


def ece_consistency(p, y, bins: int = BINS, draws: int = N_BOOT, seed: int = 0) -> dict:
    """What ECE a perfectly calibrated predictor would show with these probabilities and this
    many examples: consistency resampling (Brocker & Smith, Weather and Forecasting 2007).

    ECE over a few dozen examples is biased upwards (each bin's observed share is a noisy
    estimate), so an observed ECE is read against outcomes drawn from the predictions
    themselves, ``y* ~ Bernoulli(p)``: the ECE those draws give is what calibration alone
    leaves. The bins depend on ``p`` only, so all draws share them (one matrix product).

    Parameters
    ----------
    p : array of shape (n,)
        Predicted probabilities.
    y : array of shape (n,)
        Binary outcomes.
    bins : int
        Equal-width bins, as :func:`calibration`.
    draws : int
        Resampled outcome vectors.
    seed : int
        Seed of the draws.

    Returns
    -------
    dict
        ``ece_calibrated``: the mean ECE under calibration; ``ece_calibrated_95``: its 95th
        percentile; ``ece_p``: the share of draws with an ECE at least the observed one
        (with the observed one counted, ``(1 + k) / (1 + draws)``): small when the
        miscalibration is more than the sample size explains.
    """
    p, y = np.asarray(p, float), np.asarray(y, float)
    onehot = np.eye(bins)[_bin_of(p, bins)[1]]  # (n, bins): the bins of calibration()
    count = onehot.sum(0)
    used = count > 0
    mean_p = (p @ onehot)[used] / count[used]

    def ece_of(outcomes):  # outcomes (..., n) -> (...,)
        observed = (outcomes @ onehot)[..., used] / count[used]
        return (np.abs(mean_p - observed) * count[used]).sum(-1) / len(p)

    rng = np.random.default_rng(seed)
    null = ece_of((rng.random((draws, len(p))) < p).astype(float))
    seen = float(ece_of(y))
    return {"ece_calibrated": float(null.mean()),
            "ece_calibrated_95": float(np.quantile(null, 0.95)),
            "ece_p": float((1 + np.sum(null >= seen - 1e-12)) / (1 + draws))}


def target_interval(stat, groups, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of ``stat`` over whole groups (targets).

    Parameters
    ----------
    stat : callable
        Takes an index array into the examples (with repeats) and returns a float.
    groups : sequence of shape (n,)
        Each example's target.
    seed : int
        Seed of the draws.

    Returns
    -------
    lo, hi : float
        NaN with fewer than :data:`~transferscope.verdict.MIN_BOOT_ITEMS` targets.
    """
    groups = np.asarray(groups)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    if len(members) < MIN_BOOT_ITEMS:
        return float("nan"), float("nan")
    lo, hi, _ = bootstrap_interval(
        lambda draw: stat(np.concatenate([members[j] for j in draw])), len(members), seed)
    return lo, hi


def rule_strategies(records: list[dict], ex) -> list[str]:
    """The four-quadrant rule of :func:`transferscope.layers.recommend` for each example:
    small (fewer than ``small_per_class`` training samples per class) and similar (linear
    probe at least ``min_margin`` above the random-init twin's) -> linear probe; small and
    different -> freeze; large and similar -> LP-FT; large and different -> full."""
    from transferscope.layers.recommend import RecommendConfig

    cfg = RecommendConfig()
    out = []
    for target, source, frac in ex.keys:
        rec = next(r for r in records if r["target"] == target and r["source"] == source)
        lp = (rec.get("scores") or {}).get("linear_probe") or {}
        margin = (lp["value"] - lp["random"]) if lp.get("value") is not None \
            and lp.get("random") is not None else float("nan")
        small = rec["truth"][frac]["per_class"] < cfg.small_per_class
        similar = margin >= cfg.min_margin
        out.append(("linear_probe" if similar else "freeze") if small
                   else ("lp_ft" if similar else "full"))
    return out


def evaluate_advice(records: list[dict], metrics=None, seed: int = 0) -> dict:
    """Leave-one-target-out evaluation of the advisor and of each metric on ``records``.

    Parameters
    ----------
    records : list of dict
        Benchmark records (:func:`~transferscope.advise.records.records_from_pairs`).
    metrics : sequence of str, optional
        Metrics to judge alone (default: every metric the records carry).
    seed : int
        Seed of the bootstrap intervals.

    Returns
    -------
    dict
        ``rows``: one per predictor (``advisor``, then each metric) with ``cells``,
        ``examples``, ``tau`` / ``regret`` (means with ``_lo`` / ``_hi``), ``median_regret``,
        ``nt_flagged``, ``nt_actual``, ``precision``, ``recall``, ``f1`` (with ``_lo`` /
        ``_hi``), ``nt_robust`` (the negatives that hold against scratch at twice its
        budget: the issue's "truly negative") and ``nt_robust_caught`` (those flagged), and
        ``note``; for the advisor also ``brier``, ``ece``, what ECE a calibrated
        predictor would show here (``ece_calibrated``, ``ece_calibrated_95``, ``ece_p``:
        :func:`ece_consistency`), ``brier_negative`` (of P(negative) against the NEGATIVE
        verdicts; with ``_lo`` / ``_hi`` over targets), ``mean_p_negative`` and
        ``negative_rate``,
        ``strategy_acc``, ``always_lp_acc``, ``always_full_acc``, ``strategy_vs_lp`` and
        ``strategy_vs_full`` (strategy accuracy minus the constant's; these five with
        ``_lo`` / ``_hi`` over targets, except the constants); ``strategy_regret``,
        ``always_lp_regret``, ``always_full_regret`` (mean test accuracy lost by following
        the pick instead of the best measured strategy, over the examples where the pick was
        measured) and ``strategy_regret_vs_full`` (the advisor's minus always-full's, over
        the ``strategy_regret_examples`` where both were measured; with ``_lo`` / ``_hi``
        over targets; below 0: the advisor loses less), and ``rule_acc``: the
        four-quadrant rule's (:func:`rule_strategies`) accuracy over the ``rule_examples``
        where its strategy was measured. ``reliability``: the
        advisor's bins. ``targets``: how many targets were held out in turn. ``extras``:
        per saving ratio the advisor predicts (``data_x``, ``time_x``), its held-out
        ``examples``, ``median_abs_log_error``, ``median_factor``, ``factor95`` and
        ``spearman``. ``by_modality``: the advisor's calibration and flags within each
        modality (:func:`by_modality`).
    """

    pred = loto_predictions(records)
    ex = pred["examples"]
    cells = _cells(ex)
    if metrics is None:
        metrics = sorted({m for r in records for m in (r.get("scores") or {})})
    values = {}
    for m in metrics:
        v, flag = np.full(len(ex.acc), np.nan), np.zeros(len(ex.acc), bool)
        for i, (target, source, _) in enumerate(ex.keys):
            rec = next(r for r in records if r["target"] == target and r["source"] == source)
            s = (rec.get("scores") or {}).get(m) or {}
            if s.get("value") is not None:
                v[i] = s["value"]
                flag[i] = any(s.get(b) is not None and s["value"] < s[b]
                              for b in ("random", "raw"))
        values[m] = (v, flag)
    rows = []
    for name, score, flags in [("advisor", pred["acc"], pred["flag_negative"]),
                               *[(m, v, f) for m, (v, f) in values.items()]]:
        taus, regrets = _rank_stats(score, ex.acc, cells)
        row = {"predictor": name, "cells": len(cells), "examples": len(ex.acc)}
        notes = []
        for key, v in (("tau", taus), ("regret", regrets)):
            row[key], row[f"{key}_lo"], row[f"{key}_hi"], n = mean_interval(v, seed)
            if 0 < n < MIN_BOOT_ITEMS:
                notes.append(f"{key}: {n} cells, fewer than {MIN_BOOT_ITEMS}: no interval")
        row["median_regret"] = float(np.nanmedian(regrets)) if len(regrets) else float("nan")
        precision, recall, f1 = _f1(flags, ex.negative)
        row.update(nt_flagged=int(flags.sum()), nt_actual=int(ex.negative.sum()),
                   precision=precision, recall=recall, f1=f1)
        if ex.robust is not None:  # the negatives that hold at twice scratch's budget
            row.update(nt_robust=int(ex.robust.sum()),
                       nt_robust_caught=int((ex.robust & flags).sum()))
        for k, key in enumerate(("precision", "recall", "f1")):
            if row[key] != row[key]:
                row[f"{key}_lo"] = row[f"{key}_hi"] = float("nan")
                continue
            lo, hi, dropped = bootstrap_interval(
                lambda i, k=k, f=flags: _f1(f[i], ex.negative[i])[k], len(ex.acc), seed + 1 + k)
            row[f"{key}_lo"], row[f"{key}_hi"] = lo, hi
            if dropped:
                notes.append(f"{key}: undefined on {dropped} of {N_BOOT} bootstrap draws, "
                             "dropped")
        if name == "advisor":
            cal = calibration(pred["p_beats"], ex.beats)
            row.update(brier=cal["brier"], ece=cal["ece"],
                       **ece_consistency(pred["p_beats"], ex.beats, seed=seed))
            right = np.array([s == b for s, b in zip(pred["strategy"], ex.best_strategy,
                                                     strict=True)], float)
            lp = np.array([b == "linear_probe" for b in ex.best_strategy], float)
            full = np.array([b == "full" for b in ex.best_strategy], float)
            row["strategy_acc"] = float(right.mean())
            row["always_lp_acc"], row["always_full_acc"] = float(lp.mean()), float(full.mean())
            row["strategy_vs_lp"] = float((right - lp).mean())
            row["strategy_vs_full"] = float((right - full).mean())
            for key in ("brier", "ece"):
                row[f"{key}_lo"], row[f"{key}_hi"] = target_interval(
                    lambda i, k=key: calibration(pred["p_beats"][i], ex.beats[i])[k],
                    ex.groups, seed)
            # P(negative), which advise shows beside the flag, judged the same way
            neg = np.asarray(ex.negative, float)
            row["brier_negative"] = float(np.mean((pred["p_negative"] - neg) ** 2))
            row["mean_p_negative"] = float(np.mean(pred["p_negative"]))
            row["negative_rate"] = float(neg.mean())
            row["brier_negative_lo"], row["brier_negative_hi"] = target_interval(
                lambda i, y=neg: float(np.mean((pred["p_negative"][i] - y[i]) ** 2)),
                ex.groups, seed)
            # regret: the accuracy lost by following a pick instead of the best measured
            # strategy (exact matches count a 0.001 loss as a miss; this does not)
            regret = {name: ex.acc - np.array([ex.strategy_acc.get(k, np.full(len(ex.acc),
                                                                               np.nan))[i]
                                               for i, k in enumerate(picks)])
                      for name, picks in (("strategy", pred["strategy"]),
                                          ("always_lp", ["linear_probe"] * len(ex.acc)),
                                          ("always_full", ["full"] * len(ex.acc)))}
            for name, v in regret.items():
                row[f"{name}_regret"] = _nanmean(v)
            vs_full = regret["strategy"] - regret["always_full"]  # NaN where either is
            row["strategy_regret_vs_full"] = _nanmean(vs_full)
            row["strategy_regret_examples"] = int(np.isfinite(vs_full).sum())
            for key, v in (("strategy_acc", right), ("strategy_vs_lp", right - lp),
                           ("strategy_vs_full", right - full),
                           ("strategy_regret_vs_full", vs_full)):
                row[f"{key}_lo"], row[f"{key}_hi"] = target_interval(
                    lambda i, v=v: _nanmean(v[i]), ex.groups, seed)
            rule = rule_strategies(records, ex)
            measured = [i for i, s in enumerate(rule)
                        if not np.isnan(ex.strategy_acc.get(s, np.full(len(rule), np.nan))[i])]
            row["rule_acc"] = (float(np.mean([rule[i] == ex.best_strategy[i] for i in measured]))
                               if measured else float("nan"))
            row["rule_examples"] = len(measured)
            reliability = cal["reliability"]
        row["note"] = "; ".join(notes)
        rows.append(row)
    return {"rows": rows, "reliability": reliability, "targets": len(set(ex.groups)),
            "extras": _extras(pred, ex), "by_modality": by_modality(pred, seed)}


def by_modality(pred: dict, seed: int = 0) -> list[dict]:
    """The advisor's held-out calibration and negative-transfer flags within each modality.

    One ECE over all examples can hide a modality whose probabilities are off (a well
    calibrated modality averages out one that is not), and a user has one modality.

    Parameters
    ----------
    pred : dict
        :func:`~transferscope.advise.model.loto_predictions`'s output (``p_beats`` and
        ``flag_negative`` of shape (n,), and its ``examples``).
    seed : int
        Seed of :func:`ece_consistency`'s draws.

    Returns
    -------
    list of dict
        One per modality, sorted by name: ``modality``, ``targets``, ``examples``,
        ``mean_p`` (mean predicted P(beats scratch)) and ``beat_rate`` (the share that beat
        it), ``brier``, ``ece`` and what a calibrated predictor would show there
        (``ece_calibrated``, ``ece_calibrated_95``, ``ece_p``), ``nt_actual``,
        ``nt_flagged``, ``nt_caught`` (flagged and negative), ``precision``, ``recall``,
        ``f1`` (NaN where undefined).
    """
    ex = pred["examples"]
    mods, groups = np.asarray(ex.modalities, str), np.asarray(ex.groups)
    out = []
    for m in sorted(set(mods.tolist())):
        i = mods == m
        p, y = pred["p_beats"][i], ex.beats[i]
        cal = calibration(p, y)
        precision, recall, f1 = _f1(pred["flag_negative"][i], ex.negative[i])
        out.append({"modality": str(m),
                    "targets": len(set(groups[i].tolist())),
                    "examples": int(i.sum()), "mean_p": float(p.mean()),
                    "beat_rate": float(np.mean(y)), "brier": cal["brier"], "ece": cal["ece"],
                    **ece_consistency(p, y, seed=seed),
                    "nt_actual": int(ex.negative[i].sum()),
                    "nt_flagged": int(pred["flag_negative"][i].sum()),
                    "nt_caught": int((pred["flag_negative"][i] & ex.negative[i]).sum()),
                    "precision": precision, "recall": recall, "f1": f1})
    return out


def _extras(pred: dict, ex) -> dict:
    """Held-out accuracy of the ``data_x`` / ``time_x`` predictions: median absolute error of
    the log ratio (and the factor it is), its 95th percentile as a factor, Spearman's rho."""
    from scipy.stats import spearmanr

    out = {}
    for name, y in ex.extras.items():
        p = pred.get(f"log_{name}")
        ok = np.isfinite(y) & np.isfinite(p) if p is not None else np.zeros(len(y), bool)
        if ok.sum() < 3:
            continue
        err = np.abs(p[ok] - y[ok])
        rho = spearmanr(p[ok], y[ok]).statistic
        out[name] = {"examples": int(ok.sum()), "median_abs_log_error": float(np.median(err)),
                     "median_factor": float(np.exp(np.median(err))),
                     "factor95": float(np.exp(np.quantile(err, 0.95))),
                     "spearman": float(rho)}
    return out
