"""How well did the cheap scores predict what fine-tuning really did?

From a study's finished runs: per (target, source, strategy, fraction) the transfer and
scratch test accuracies, the gain with its paired interval (seeds and test samples, every fold
of a cross-validated seed assembled into one row: the same numbers ``tscope finetune`` gives
for those runs), its minimum detectable effect and the verdict (with ``check_budget``, also
against the baseline at twice the budget); per (target, source) the transferability scores and
the risk label. Then, per metric, for the largest fraction of each strategy:

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
import json
from collections import defaultdict

import numpy as np

from transferscope.config import RunConfig
from transferscope.errors import InputError
from transferscope.store import RunStore, open_store
from transferscope.study.spec import StudySpec
from transferscope.verdict import (
    MIN_BOOT_ITEMS,
    N_BOOT,
    bootstrap_interval,
    mean_interval,
    negative_transfer_verdict,
    paired_gain,
    stack_correctness,
)


def _folds(spec: StudySpec, target: str, tags: dict) -> int | None:
    """The folds (0: one split) a training run on ``target`` must have, as the runner
    resolves them: from ``splits``, or with ``splits`` unset from the target's size, which
    the study's tags record (``target_size``); None when they do not."""
    from transferscope.finetune.run import resolve_folds

    has_test = target in spec.test_data
    if spec.splits is None and not has_test:
        size = tags.get("target_size")
        return None if size is None else resolve_folds(None, int(size), False)
    return resolve_folds(spec.splits, 0, has_test)


def _canonical(d: dict) -> dict:
    """As a :class:`RunConfig` stores it (tuples as lists)."""
    return json.loads(json.dumps(d, sort_keys=True))


def _grid_runs(spec: StudySpec, store: RunStore) -> list[dict]:
    """The study's finished runs that belong to the spec's grid as it is now.

    Read from the store alone (no model or dataset is loaded): a run counts when the study's
    tags place it in the grid (target, source, arm, strategy, fraction, seed, fold) and its
    recorded config matches the spec's training settings (twice the budget for the budget
    check's arm), strategy options, layer, scoring and evaluation protocol: the folds
    (:func:`_folds`; with ``splits`` unset, those of the target size the study's tags
    record, so runs of an earlier ``splits`` do not count), the split seed (``0``, or ``s``
    for repetition ``s`` of cross-validation, as ``finetune`` draws them) and whether a
    validation / test set was given. A run of an earlier version of the spec (a source since
    removed, other epochs) does not count; of two runs for one grid cell (e.g. a source whose
    checkpoint was retrained) the later finished one counts.
    """
    from transferscope.finetune.run import default_split, doubled_budget
    from transferscope.finetune.strategies import resolved_options

    train = {"transfer": _canonical(spec.train.identity()),
             spec.baseline: _canonical(spec.train.identity())}
    if spec.check_budget:
        train[f"{spec.baseline} x2 budget"] = _canonical(doubled_budget(spec.train).identity())
    seeds = set(range(spec.train.seed, spec.train.seed + spec.seeds))
    options = {s: resolved_options(s, spec.strategy_options.get(s, {}))
               for s in [*spec.strategies, spec.baseline]}
    scoring = spec.scoring()
    cells, fields = {}, {f.name for f in dataclasses.fields(RunConfig)}
    for r in store.list(study=spec.name, state="finished"):
        t, c = r["tags"] or {}, r["config"] or {}
        if not fields <= set(c):  # written before RunConfig (an upgraded store): not this grid
            continue
        target = t.get("target")
        if target not in spec.targets:
            continue
        if spec.layer is not None and c["layer"] != spec.layer:
            continue
        if t.get("kind") == "scores":
            ok = (t.get("source") in spec.sources and c["scoring"] == scoring
                  and c["split_seed"] == 0)
            cell = ("scores", target, t["source"])
        elif t.get("kind") == "train":
            k, arm = _folds(spec, target, t), t.get("arm")
            has_val, has_test = target in spec.val_data, target in spec.test_data
            ok = (arm in train and c["train"] == train[arm] and r["seed"] in seeds
                  and c["fraction"] in spec.fractions
                  and c["strategy_config"] == options.get(c["strategy"])
                  and k is not None and c["folds"] == k and 0 <= c["fold"] < max(k, 1)
                  and c["split_seed"] == (r["seed"] - spec.train.seed if k else 0)
                  and c["split"] == list(default_split(has_val, has_test, k))
                  and bool(c["val_data"]) == has_val and bool(c["test_data"]) == has_test)
            if arm == "transfer":
                ok = ok and t.get("source") in spec.sources and c["strategy"] in spec.strategies
            else:
                ok = ok and c["strategy"] == spec.baseline
            cell = ("train", target, t.get("source"), t.get("arch"), arm, c["strategy"],
                    c["fraction"], r["seed"], c["fold"])
        else:
            continue
        if ok and (cell not in cells or r["finished_at"] > cells[cell]["finished_at"]):
            cells[cell] = r
    return sorted(cells.values(), key=lambda r: r["id"])


def _complete(by_seed: dict) -> set:
    """The seeds of one arm (seed -> fold -> run) whose runs cover every fold (one run
    without folds)."""
    out = set()
    for seed, by_fold in by_seed.items():
        folds = next(iter(by_fold.values()))["config"]["folds"]
        if set(by_fold) == set(range(max(folds, 1))):
            out.add(seed)
    return out


def _stacked(by_seed: dict, seeds) -> tuple[np.ndarray, list[dict]]:
    """(n_seeds, n_test) correctness of one arm (:func:`stack_correctness`) and its runs,
    ordered by seed and fold."""
    runs = [[by_seed[s][f] for f in sorted(by_seed[s])] for s in seeds]
    return (stack_correctness([[r["metrics"] for r in rs] for rs in runs]),
            [r for rs in runs for r in rs])


def collect(spec: StudySpec, store: RunStore | None = None) -> dict:
    """Outcomes and scores of the finished runs of the spec's grid, from the store alone.

    A seed counts for a pair when both arms have all its runs (every fold, with
    cross-validation); each arm's per-seed test correctness is assembled over the folds
    (:func:`~transferscope.verdict.stack_correctness`) and the gain is
    :func:`~transferscope.verdict.paired_gain` on it, as ``tscope finetune`` computes it.

    Returns
    -------
    dict
        ``pairs``: one row per (target, source, strategy, fraction) with both arms: ``seeds``,
        ``folds`` (0: one split), accuracies, ``gain`` with its paired interval
        (``gain_lo``, ``gain_hi``), ``verdict``, ``mde`` (the minimum detectable effect),
        ``reading`` (``effect``, ``no effect`` or ``too little evidence``), times, run ids
        (by seed, then fold); with ``check_budget``, against the baseline at twice the
        budget: ``budget_acc``, ``budget_gain`` (``_lo``, ``_hi``), ``budget_verdict``,
        ``budget_holds`` (the same verdict) and ``budget_runs`` (None where those runs are
        missing); and (when scored) the source's feature width ``dim``, each metric's value,
        its random-init twin's and the raw input's (``<metric>_random``, ``<metric>_raw``),
        ``<metric>_flags_negative`` and ``risk``; ``lr_edge``: the arms whose runs chose the
        learning-rate grid's edge in most of them (:func:`~transferscope.finetune.run.grid_edges`:
        such a verdict may come from an under-tuned arm).
    """
    from transferscope.finetune.run import grid_edges

    store = store or open_store(spec.db)
    budget_arm = f"{spec.baseline} x2 budget"
    # arm cell -> seed -> fold -> run
    transfer, scratch, doubled = (defaultdict(lambda: defaultdict(dict)) for _ in range(3))
    arch_of, scores = {}, {}
    for r in _grid_runs(spec, store):
        t, c = r["tags"], r["config"]
        if t["kind"] == "train":
            if t["arm"] == "transfer":
                key = (t["target"], t["source"], c["strategy"], c["fraction"])
                transfer[key][r["seed"]][c["fold"]] = r
                arch_of[key] = t["arch"]
            else:
                arm = doubled if t["arm"] == budget_arm else scratch
                arm[(t["target"], t["arch"], c["fraction"])][r["seed"]][c["fold"]] = r
        else:
            scores[(t["target"], t["source"])] = r["metrics"]["rows"]
    pairs = []
    for (target, source, strategy, fraction), by_seed in sorted(transfer.items()):
        key = (target, arch_of[(target, source, strategy, fraction)], fraction)
        base = scratch.get(key, {})
        seeds = sorted(_complete(by_seed) & _complete(base))
        if not seeds:
            continue
        t, t_runs = _stacked(by_seed, seeds)
        b, b_runs = _stacked(base, seeds)
        gain = paired_gain(t, b)
        verdict = negative_transfer_verdict(gain.low, gain.high)
        row = {"target": target, "source": source, "strategy": strategy, "fraction": fraction,
               "seeds": len(seeds), "folds": t_runs[0]["config"]["folds"],
               "transfer_acc": float(t.mean()), "scratch_acc": float(b.mean()),
               "gain": gain.gain, "gain_lo": gain.low, "gain_hi": gain.high,
               "verdict": verdict, "mde": gain.mde, "reading": gain.reading(),
               "transfer_best_s": float(np.mean([r["metrics"]["best_s"] for r in t_runs])),
               "scratch_best_s": float(np.mean([r["metrics"]["best_s"] for r in b_runs])),
               "transfer_runs": [r["id"] for r in t_runs],
               "scratch_runs": [r["id"] for r in b_runs],
               "target_size": t_runs[0]["tags"].get("target_size"),
               "target_classes": t_runs[0]["tags"].get("target_classes"),
               "lr_edge": grid_edges({"transfer": _lr_scales(t_runs),
                                      "scratch": _lr_scales(b_runs)}, spec.train.lr_grid)}
        if spec.check_budget:
            row.update(_budget_check(by_seed, doubled.get(key, {}), verdict))
        rows = scores.get((target, source))
        if rows:
            row.update(_score_fields(rows, spec.metrics))
        pairs.append(row)
    return {"pairs": pairs}


def edge_summary(pairs: list[dict]) -> str | None:
    """One line on the cells whose arms chose the learning-rate grid's edge in most seeds
    (``lr_edge``, :func:`collect`), or ``None`` when there are none.

    Parameters
    ----------
    pairs : list of dict
        :func:`collect`'s ``pairs``.

    Returns
    -------
    str or None
        How many cells, of how many, and the first one's sentence.
    """
    edged = [p for p in pairs if p.get("lr_edge")]
    if not edged:
        return None
    first = edged[0]
    return (f"{len(edged)} of {len(pairs)} cells had an arm choose the edge of the "
            f"learning-rate grid in most seeds, so their verdicts may come from an under-tuned "
            f"arm (e.g. {first['source']} -> {first['target']}, {first['strategy']}, fraction "
            f"{first['fraction']:g}: {first['lr_edge'][0]})")


def _lr_scales(runs: list[dict]) -> list[float]:
    """The learning-rate multiplier each run chose (1.0 where none was recorded)."""
    return [float(r["metrics"].get("lr_scale", 1.0)) for r in runs]


def _score_fields(rows: list[dict], metrics) -> dict:
    """A scoring run's rows -> the pair's ``risk``, ``dim``, each metric's value and its
    ``<m>_random`` / ``<m>_raw`` baselines and ``<m>_flags_negative``."""
    cand = next(x for x in rows if x["role"] == "candidate")
    twin = next((x for x in rows if x["role"] == "random-twin"), None)
    raw = next((x for x in rows if x["role"] == "raw-baseline"), None)
    out = {"risk": cand.get("risk"), "dim": cand.get("dim")}
    for m in metrics:
        out[m] = cand[m]
        for label, x in (("random", twin), ("raw", raw)):
            out[f"{m}_{label}"] = x[m] if x is not None else float("nan")
        below = [cand[m] < x[m] for x in (twin, raw) if x is not None]
        out[f"{m}_flags_negative"] = bool(any(below))
    return out


def study_scores(spec: StudySpec, store: RunStore | None = None) -> dict:
    """The finished scoring runs of the spec's grid, without any training truth.

    Returns
    -------
    dict
        ``(target, source) -> {"risk", "dim", "scores": {metric: {"value", "random",
        "raw"}}}``: the score part of a benchmark record
        (:func:`~transferscope.advise.records.records_from_pairs`).
    """
    from transferscope.advise.records import score_part

    store = store or open_store(spec.db)
    return {(r["tags"]["target"], r["tags"]["source"]):
            score_part(_score_fields(r["metrics"]["rows"], spec.metrics), spec.metrics)
            for r in _grid_runs(spec, store) if r["tags"]["kind"] != "train"}


def _budget_check(transfer: dict, doubled: dict, verdict: str) -> dict:
    """The budget check's columns of a pair: transfer against the baseline trained at twice
    the budget (the seeds both have), and whether the verdict holds."""
    seeds = sorted(_complete(transfer) & _complete(doubled))
    if not seeds:
        return {"budget_acc": float("nan"), "budget_gain": float("nan"),
                "budget_gain_lo": float("nan"), "budget_gain_hi": float("nan"),
                "budget_verdict": None, "budget_holds": None, "budget_runs": []}
    t, _ = _stacked(transfer, seeds)
    d, runs = _stacked(doubled, seeds)
    gain = paired_gain(t, d)
    again = negative_transfer_verdict(gain.low, gain.high)
    return {"budget_acc": float(d.mean()), "budget_gain": gain.gain,
            "budget_gain_lo": gain.low, "budget_gain_hi": gain.high, "budget_verdict": again,
            "budget_holds": again == verdict, "budget_runs": [r["id"] for r in runs]}


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
    """What :func:`evaluate` returns: a dict with ``pairs``, ``metrics``, ``share_negative``
    and ``advice`` (the advisor and each metric judged leave-one-target-out:
    :func:`transferscope.advise.evaluation.evaluate_advice`); :meth:`to_frame` gives a table
    as a DataFrame."""

    def to_frame(self, table: str = "metrics"):
        """One table of the evaluation as a DataFrame.

        Parameters
        ----------
        table : {"metrics", "pairs", "advice"}
            ``"metrics"``: one row per (strategy, metric) at the largest fraction, with
            ``strategy``, ``fraction``, ``metric``, ``pairs``, ``targets``, ``tau``,
            ``pearson``, ``regret`` (each with ``_lo`` / ``_hi``), ``neg_flagged``,
            ``neg_actual``, ``precision`` and ``recall`` (each with ``_lo`` / ``_hi``) and
            ``note`` (intervals left out, bootstrap draws dropped); the ``risk`` rows have
            no tau, Pearson or regret. ``"pairs"``: one row per (target,
            source, strategy, fraction) as :func:`collect` gives it (seeds, folds,
            accuracies, ``gain`` with its interval, ``verdict``, ``mde``, ``reading``, the
            budget check's columns, times, run ids, scores and flags). ``"advice"``: one row
            per predictor (the advisor, then each metric) of the leave-one-target-out
            evaluation.

        Returns
        -------
        pandas.DataFrame of shape (n_rows, n_columns)
            ``attrs["share_negative"]``: the share of pairs whose verdict is NEGATIVE.
        """
        from transferscope.frames import frame

        first = {"metrics": ["strategy", "fraction", "metric"],
                 "pairs": ["target", "source", "strategy", "fraction"],
                 "advice": ["predictor"]}
        if table not in first:
            raise InputError(f"Expected table 'metrics', 'pairs' or 'advice', got {table!r}; "
                             "e.g. evaluation.to_frame('pairs')")
        rows = self["advice"]["rows"] if table == "advice" else self[table]
        return frame(rows, first[table], share_negative=self["share_negative"])


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
                    row[name], row[f"{name}_lo"], row[f"{name}_hi"], n = mean_interval(v)
                    if 0 < n < MIN_BOOT_ITEMS:
                        notes.append(f"{name}: {n} target(s) with a value, fewer than "
                                     f"{MIN_BOOT_ITEMS}: no interval")
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
                lo, hi, dropped = bootstrap_interval(
                    lambda idx, f=f, a=a, k=k: _prf(f[idx], a[idx])[k], len(sel), seed=1 + k)
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
                           if verdicts else float("nan"),
                           advice=_advice(spec, pairs))


def _advice(spec: StudySpec, pairs: list[dict]) -> dict:
    """The advisor refitted on this study leave-one-target-out, judged against each metric
    (:func:`transferscope.advise.evaluation.evaluate_advice`); ``{"rows": [], "note": ...}``
    when the study has too few finished cells or targets for it."""
    from transferscope.advise.evaluation import evaluate_advice
    from transferscope.advise.records import records_from_pairs

    records = records_from_pairs(pairs, spec.metrics, spec.strategies,
                                 study_sizes(spec, pairs))
    targets = {r["target"] for r in records if any(s["complete"] for s in r["truth"].values())}
    if len(targets) < 2:
        return {"rows": [], "reliability": [], "by_modality": [], "targets": len(targets),
                "note": f"advisor not evaluated: {len(targets)} target(s) with every strategy "
                        "finished; leave-one-target-out needs at least 2"}
    try:
        out = evaluate_advice(records, spec.metrics)
    except InputError as exc:
        return {"rows": [], "reliability": [], "by_modality": [], "targets": len(targets),
                "note": f"advisor not evaluated: {exc}"}
    out["note"] = ""
    return out


def study_sizes(spec, rows) -> dict:
    """``(target, fraction) -> {"per_class", "classes"}`` for a study's evaluated pairs: the
    training samples per class (the training part of the study's split of the target, times
    the fraction) and the classes, from the sizes the study's tags record
    (``target_size``, ``target_classes``); for runs planned before the tags had the classes,
    from the target data itself."""
    from transferscope.finetune.run import default_split
    from transferscope.study.worker import target_data

    out = {}
    for r in rows:
        target = r["target"]
        size, classes = r.get("target_size"), r.get("target_classes")
        if size is None or classes is None:
            labels = np.asarray(target_data(target, spec.budgets.per_class).labels)
            size, classes = len(labels), len(np.unique(labels))
        folds = r.get("folds") or 0
        split = default_split(target in spec.val_data, target in spec.test_data, folds)
        share = (1.0 - 1.0 / folds if folds else 1.0) * split[0] / sum(split)
        out[(target, r["fraction"])] = {
            "per_class": round(size / classes * share * r["fraction"], 1),
            "classes": int(classes)}
    return out


def study_records(spec, store=None, modality: str | None = None) -> list[dict]:
    """The benchmark records of a study's finished pairs
    (:func:`~transferscope.advise.records.records_from_pairs` on :func:`collect`), read from
    its store."""
    from transferscope.advise.records import records_from_pairs

    rows = collect(spec, store)["pairs"]
    return records_from_pairs(rows, spec.metrics, spec.strategies, study_sizes(spec, rows),
                              modality)
