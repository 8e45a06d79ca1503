"""How well did the cheap scores predict what fine-tuning really did?

From a study's finished runs: per (target, source, strategy, fraction) the transfer and
scratch test accuracies, the gain with its paired interval (seeds and test samples) and the
verdict; per (target, source) the transferability scores and the risk label. Then, per metric,
for the largest fraction of each strategy:

- weighted Kendall tau (``scipy.stats.weightedtau``) between a target's source scores and the
  sources' fine-tuned test accuracy, averaged over targets;
- Pearson correlation, likewise (targets with at least 3 sources);
- top-1 regret: accuracy lost by fine-tuning the top-scored source instead of the best one;
- negative-transfer detection: a pair is flagged when the source scores below its random-init
  twin or below the raw input on that metric (the ``risk`` row flags LIKELY-NEGATIVE labels);
  precision and recall against the pairs whose verdict is NEGATIVE.

Intervals (95 %, seeded): for tau, Pearson and regret a BCa bootstrap over the targets that have
a value (``scipy.stats.bootstrap``), and none with fewer than 5 such targets (the row's ``note``
says so); for precision and recall a percentile bootstrap over (target, source) pairs, where
draws on which the ratio is undefined (nothing flagged, or no NEGATIVE pair) are dropped,
counted and named in ``note``.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from transferscope.config import RunConfig
from transferscope.errors import InputError
from transferscope.store import RunStore, open_store
from transferscope.study.spec import StudySpec
from transferscope.verdict import negative_transfer_verdict, paired_gain

N_BOOT = 2000
MIN_TARGETS = 5  # targets with a value needed for an interval over targets


def _grid_runs(spec: StudySpec, store: RunStore) -> list[dict]:
    """The study's finished runs that belong to the spec's grid as it is now.

    Read from the store alone (no model or dataset is loaded): a run counts when the study's
    tags place it in the grid (target, source, strategy, fraction, seed) and its recorded
    config matches the spec's training settings, strategy options, layer and scoring. A run of
    an earlier version of the spec (a source since removed, other epochs) does not count; of
    two runs for one grid cell (e.g. a source whose checkpoint was retrained) the later
    finished one counts.
    """
    from transferscope.finetune.strategies import resolved_options

    train = spec.train.identity()
    seeds = set(range(spec.train.seed, spec.train.seed + spec.seeds))
    options = {s: resolved_options(s, spec.strategy_options.get(s, {}))
               for s in [*spec.strategies, spec.baseline]}
    scoring = {"metrics": list(spec.metrics), "subsamples": spec.budgets.subsamples}
    cells, fields = {}, {f.name for f in dataclasses.fields(RunConfig)}
    for r in store.list(study=spec.name, state="finished"):
        t, c = r["tags"] or {}, r["config"] or {}
        if not fields <= set(c):  # written before RunConfig (an upgraded store): not this grid
            continue
        if t.get("target") not in spec.targets or c["split_seed"] != 0:
            continue
        if spec.layer is not None and c["layer"] != spec.layer:
            continue
        if t.get("kind") == "scores":
            ok = t.get("source") in spec.sources and c["scoring"] == scoring
            cell = ("scores", t["target"], t["source"])
        elif t.get("kind") == "train":
            ok = (c["train"] == train and r["seed"] in seeds
                  and c["fraction"] in spec.fractions
                  and c["strategy_config"] == options.get(c["strategy"]))
            if t.get("arm") == "transfer":
                ok = ok and t.get("source") in spec.sources and c["strategy"] in spec.strategies
            else:
                ok = ok and c["strategy"] == spec.baseline
            cell = ("train", t["target"], t.get("source"), t.get("arch"), c["strategy"],
                    c["fraction"], r["seed"])
        else:
            continue
        if ok and (cell not in cells or r["finished_at"] > cells[cell]["finished_at"]):
            cells[cell] = r
    return sorted(cells.values(), key=lambda r: r["id"])


def collect(spec: StudySpec, store: RunStore | None = None) -> dict:
    """Outcomes and scores of the finished runs of the spec's grid, from the store alone.

    Returns
    -------
    dict
        ``pairs``: one row per (target, source, strategy, fraction) with both arms: seeds,
        accuracies, ``gain`` with its paired interval, ``verdict``, times, run ids,
        and (when scored) each metric's value with ``<metric>_flags_negative`` and ``risk``.
    """
    store = store or open_store(spec.db)
    transfer, scratch, scores = defaultdict(dict), defaultdict(dict), {}
    for r in _grid_runs(spec, store):
        t, c = r["tags"], r["config"]
        if t["kind"] == "train":
            if t["arm"] == "transfer":
                cell = transfer[(t["target"], t["source"], c["strategy"], c["fraction"])]
                cell[r["seed"]] = r
                cell["arch"] = t["arch"]
            else:
                scratch[(t["target"], t["arch"], c["fraction"])][r["seed"]] = r
        else:
            scores[(t["target"], t["source"])] = r["metrics"]["rows"]
    pairs = []
    for (target, source, strategy, fraction), by_seed in sorted(transfer.items()):
        arch = by_seed.pop("arch")
        base = scratch.get((target, arch, fraction), {})
        seeds = sorted(set(by_seed) & set(base))
        if not seeds:
            continue
        t = np.stack([by_seed[s]["metrics"]["test_correct"] for s in seeds])
        b = np.stack([base[s]["metrics"]["test_correct"] for s in seeds])
        g, lo, hi = paired_gain(t, b)
        row = {"target": target, "source": source, "strategy": strategy, "fraction": fraction,
               "seeds": len(seeds), "transfer_acc": float(t.mean()),
               "scratch_acc": float(b.mean()), "gain": g, "gain_lo": lo, "gain_hi": hi,
               "verdict": negative_transfer_verdict(lo, hi),
               "transfer_best_s": float(np.mean([by_seed[s]["metrics"]["best_s"]
                                                 for s in seeds])),
               "scratch_best_s": float(np.mean([base[s]["metrics"]["best_s"] for s in seeds])),
               "transfer_runs": [by_seed[s]["id"] for s in seeds],
               "scratch_runs": [base[s]["id"] for s in seeds]}
        rows = scores.get((target, source))
        if rows:
            cand = next(x for x in rows if x["role"] == "candidate")
            twin = next((x for x in rows if x["role"] == "random-twin"), None)
            raw = next((x for x in rows if x["role"] == "raw-baseline"), None)
            row["risk"] = cand.get("risk")
            for m in spec.metrics:
                row[m] = cand[m]
                below = [cand[m] < x[m] for x in (twin, raw) if x is not None]
                row[f"{m}_flags_negative"] = bool(any(below))
        pairs.append(row)
    return {"pairs": pairs}


def _boot(values_fn, n_items: int, seed: int = 0) -> tuple[float, float, int]:
    """95 % percentile bootstrap of a statistic of ``n_items`` resampled items whose value can
    be undefined on a draw (precision without a flagged pair): those draws are dropped and
    counted, so the interval is conditional on the statistic existing.

    Returns
    -------
    lo, hi : float
        NaN when every draw was undefined.
    dropped : int
        Draws (of :data:`N_BOOT`) on which the statistic was undefined.
    """
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(N_BOOT):
        v = values_fn(rng.integers(0, n_items, n_items))
        if v == v:
            stats.append(v)
    dropped = N_BOOT - len(stats)
    if not stats:
        return float("nan"), float("nan"), dropped
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi), dropped


def _mean_ci(v, seed: int = 0) -> tuple[float, float, float, int]:
    """Mean over targets (NaN-skipping) and its 95 % BCa bootstrap interval over the targets
    with a value (``scipy.stats.bootstrap``; Efron & Tibshirani, "An Introduction to the
    Bootstrap", 1993, ch. 14), or no interval (NaN) with fewer than :data:`MIN_TARGETS`:
    resampling 2-4 values gives a handful of distinct means, not a 95 % interval.

    Returns
    -------
    mean, lo, hi : float
    n : int
        Targets with a value.
    """
    import warnings

    import scipy.stats

    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(v.mean())
    if len(v) < MIN_TARGETS:
        return mean, float("nan"), float("nan"), len(v)
    if np.ptp(v) == 0:
        return mean, mean, mean, len(v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa's degenerate-data warning: handled below
        ci = scipy.stats.bootstrap((v,), np.mean, n_resamples=N_BOOT, confidence_level=0.95,
                                   method="BCa", random_state=seed).confidence_interval
    lo, hi = float(ci.low), float(ci.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):  # BCa undefined: the percentile interval
        lo, hi, _ = _boot(lambda idx: float(v[idx].mean()), len(v), seed)
    return mean, lo, hi, len(v)


def _per_target(pairs, metric):
    """target -> (scores, accuracies) over its sources."""
    out = defaultdict(lambda: ([], []))
    for p in pairs:
        if metric in p and p[metric] == p[metric]:
            out[p["target"]][0].append(p[metric])
            out[p["target"]][1].append(p["transfer_acc"])
    return {t: (np.array(s), np.array(a)) for t, (s, a) in out.items() if len(s) >= 2}


def _prf(flags, actual):
    flags, actual = np.asarray(flags, bool), np.asarray(actual, bool)
    tp = (flags & actual).sum()
    precision = tp / flags.sum() if flags.sum() else float("nan")
    recall = tp / actual.sum() if actual.sum() else float("nan")
    return float(precision), float(recall)


class StudyEvaluation(dict):
    """What :func:`evaluate` returns: a dict with ``pairs``, ``metrics`` and
    ``share_negative``; :meth:`to_frame` gives either table as a DataFrame."""

    def to_frame(self, table: str = "metrics"):
        """One table of the evaluation as a DataFrame.

        Parameters
        ----------
        table : {"metrics", "pairs"}
            ``"metrics"``: one row per (strategy, metric) at the largest fraction, with
            ``strategy``, ``fraction``, ``metric``, ``pairs``, ``targets``, ``tau``,
            ``pearson``, ``regret`` (each with ``_lo`` / ``_hi``), ``neg_flagged``,
            ``neg_actual``, ``precision`` and ``recall`` (each with ``_lo`` / ``_hi``) and
            ``note`` (intervals left out, bootstrap draws dropped); the ``risk`` rows have
            no tau, Pearson or regret. ``"pairs"``: one row per (target,
            source, strategy, fraction) as :func:`collect` gives it (accuracies, ``gain``
            with its interval, ``verdict``, times, run ids, scores and flags).

        Returns
        -------
        pandas.DataFrame of shape (n_rows, n_columns)
            ``attrs["share_negative"]``: the share of pairs whose verdict is NEGATIVE.
        """
        from transferscope.frames import frame

        first = {"metrics": ["strategy", "fraction", "metric"],
                 "pairs": ["target", "source", "strategy", "fraction"]}
        if table not in first:
            raise InputError(f"Expected table 'metrics' or 'pairs', got {table!r}; e.g. "
                             "evaluation.to_frame('pairs')")
        return frame(self[table], first[table], share_negative=self["share_negative"])


def evaluate(spec: StudySpec, store: RunStore | None = None) -> StudyEvaluation:
    """Did the scores predict what fine-tuning did? Per strategy and metric, at the largest
    fraction: weighted Kendall tau, Pearson, top-1 regret (means over targets with bootstrap
    intervals) and negative-transfer precision and recall (see the module docstring).

    Returns
    -------
    StudyEvaluation
        A dict: ``pairs`` (:func:`collect`), ``metrics`` (one row per strategy and metric,
        plus the ``risk`` label) and ``share_negative``; ``.to_frame("metrics" | "pairs")``
        gives either table as a DataFrame.
    """
    import scipy.stats

    data = collect(spec, store)
    pairs = data["pairs"]
    rows = []
    for strategy in spec.strategies:
        top = max((p["fraction"] for p in pairs if p["strategy"] == strategy), default=None)
        sel = [p for p in pairs if p["strategy"] == strategy and p["fraction"] == top]
        if not sel:
            continue
        actual = [p["verdict"] == "NEGATIVE" for p in sel]
        for metric in [*spec.metrics, "risk"]:
            row = {"strategy": strategy, "fraction": top, "metric": metric, "pairs": len(sel)}
            notes = []
            if metric != "risk":
                per = _per_target(sel, metric)
                targets = sorted(per)
                taus = np.array([scipy.stats.weightedtau(*per[t])[0] for t in targets])
                pears = np.array([scipy.stats.pearsonr(*per[t])[0] if len(per[t][0]) >= 3
                                  and np.ptp(per[t][0]) > 0 and np.ptp(per[t][1]) > 0
                                  else np.nan for t in targets])
                regrets = np.array([per[t][1].max() - per[t][1][np.argmax(per[t][0])]
                                    for t in targets])
                row["targets"] = len(targets)
                for name, v in (("tau", taus), ("pearson", pears), ("regret", regrets)):
                    row[name], row[f"{name}_lo"], row[f"{name}_hi"], n = _mean_ci(v)
                    if 0 < n < MIN_TARGETS:
                        notes.append(f"{name}: {n} target(s) with a value, fewer than "
                                     f"{MIN_TARGETS}: no interval")
                flags = [p.get(f"{metric}_flags_negative", False) for p in sel]
            else:
                flags = [p.get("risk") == "LIKELY-NEGATIVE" for p in sel]
            precision, recall = _prf(flags, actual)
            f, a = np.asarray(flags), np.asarray(actual)
            row.update(neg_flagged=int(f.sum()), neg_actual=int(a.sum()),
                       precision=precision, recall=recall)
            for k, name in enumerate(("precision", "recall")):
                if row[name] != row[name]:  # undefined on the data: no interval
                    row[f"{name}_lo"] = row[f"{name}_hi"] = float("nan")
                    continue
                lo, hi, dropped = _boot(lambda idx, f=f, a=a, k=k: _prf(f[idx], a[idx])[k],
                                        len(sel), seed=1 + k)
                row[f"{name}_lo"], row[f"{name}_hi"] = lo, hi
                if dropped:
                    notes.append(f"{name}: undefined on {dropped} of {N_BOOT} bootstrap draws "
                                 "(no pair flagged or no NEGATIVE pair in the draw), dropped; "
                                 "the interval is over the rest")
            row["note"] = "; ".join(notes)
            rows.append(row)
    verdicts = [p["verdict"] for p in pairs]
    return StudyEvaluation(pairs=pairs, metrics=rows,
                           share_negative=(verdicts.count("NEGATIVE") / len(verdicts))
                           if verdicts else float("nan"))
