"""Benchmark records: one per (source, target) pair, with its scores and its measured truth.

The one conversion from a study's evaluated pairs (:func:`transferscope.study.evaluate.collect`:
one row per target, source, strategy and data size) to the records the advisor learns from and
is judged on. :func:`transferscope.study.evaluate.study_records` builds them from a study's
store (``tscope study evaluate``, ``tscope advise --fit``, ``benchmarks/build.py``, which saves
them as JSON).
"""

from __future__ import annotations

from collections import defaultdict


def score_part(row: dict, metrics) -> dict:
    """The score part of a record from an evaluated pair's (or a scoring run's) columns:
    ``scores`` (``{metric: {"value", "random", "raw"}}`` from ``<m>``, ``<m>_random``,
    ``<m>_raw``), ``dim`` and ``risk``."""
    return {"scores": {m: {"value": row[m], "random": row.get(f"{m}_random"),
                           "raw": row.get(f"{m}_raw")} for m in metrics if m in row},
            "dim": row["dim"], "risk": row.get("risk")}


def records_from_pairs(rows: list[dict], metrics, strategies, sizes: dict,
                       modality: str | None = None) -> list[dict]:
    """Group a study's evaluated pairs into one record per (target, source).

    Parameters
    ----------
    rows : list of dict
        :func:`~transferscope.study.evaluate.collect`'s ``pairs``.
    metrics : sequence of str
        The study's metrics.
    strategies : sequence of str
        The study's strategies (a size is ``complete`` when all of them have a result).
    sizes : dict
        ``(target, fraction) -> {"per_class": float, "classes": int}``: the training samples
        per class at that data size, and the classes.
    modality : str, optional
        Recorded in every record (``image``, ``series``, ``text``).

    Returns
    -------
    list of dict
        Sorted by (target, source). Each: ``target``, ``source``, ``modality``; when scored,
        ``scores`` (``{metric: {"value", "random", "raw"}}``), ``dim`` and ``risk``; ``truth``:
        ``{fraction (str): {"per_class", "classes", "seeds", "scratch_acc", "scratch_best_s",
        "strategies": {strategy: {"transfer_acc", "gain", "gain_lo", "gain_hi", "verdict",
        "mde", "reading", "transfer_best_s", "lr_edge"} (with the study's budget check also
        "budget_verdict", "budget_holds")},
        "best_strategy", "best_acc", "lp_acc", "beats_scratch", "verdict",
        "complete"}}``, where the best strategy has the highest transfer accuracy, and
        ``beats_scratch`` / ``verdict`` are its gain > 0 and its verdict.
    """
    pairs = defaultdict(lambda: {"truth": {}})
    for r in rows:
        rec = pairs[(r["target"], r["source"])]
        rec.update(target=r["target"], source=r["source"], modality=modality)
        if "dim" in r:
            rec.update(score_part(r, metrics))
        size = rec["truth"].setdefault(str(r["fraction"]), {
            **sizes[(r["target"], r["fraction"])], "seeds": r["seeds"],
            "scratch_acc": r["scratch_acc"], "strategies": {}})
        if "scratch_best_s" in r:
            size["scratch_best_s"] = r["scratch_best_s"]
        size["strategies"][r["strategy"]] = {
            k: r[k] for k in ("transfer_acc", "gain", "gain_lo", "gain_hi", "verdict", "mde",
                              "reading", "budget_verdict", "budget_holds", "transfer_best_s",
                              "lr_edge")
            if k in r}
    out = []
    for rec in pairs.values():
        for size in rec["truth"].values():
            arms = size["strategies"]
            best = max(sorted(arms), key=lambda s: arms[s]["transfer_acc"])
            size.update(best_strategy=best, best_acc=arms[best]["transfer_acc"],
                        lp_acc=arms.get("linear_probe", {}).get("transfer_acc"),
                        beats_scratch=bool(arms[best]["gain"] > 0),
                        verdict=arms[best]["verdict"],
                        complete=sorted(arms) == sorted(strategies))
        out.append(rec)
    return sorted(out, key=lambda p: (p["target"], p["source"]))
