"""Do the transferability scores reward feature width, and does a width transform fix it?

    python bench/width.py [--widths none,pca:32,standardize] [--parts images,series,text,text-hard]

On the project's benchmark (``benchmarks/``: run its studies first), every (source, target)
pair is scored again with each width setting applied to every model alike
(:mod:`transferscope.metrics.width`; scoring runs only, stored in the benchmark's stores; the
fine-tuning truth is shared). A store without fine-tuning runs (a fresh machine) gets the
study's pretraining, then its scores, and takes the truth from ``benchmarks/results/``.
Per setting and metric, over the (target, size) cells that have at least two candidates with
complete truth:

- ``tau``: weighted Kendall tau between the metric and the fine-tuned accuracy (mean over
  cells, 95 % BCa interval), and ``regret``: accuracy lost by fine-tuning the top-scored
  source;
- ``width_pref``: in cells whose candidates differ in width, the widest candidate's rank by
  the metric minus its rank by fine-tuned accuracy, scaled to [-1, 1] (0: the metric places
  the wide model where fine-tuning does; > 0: it favours it);

and the advisor refitted on each setting's scores (leave-one-target-out tau). The setting with
the best mean tau over metrics is the one to make the default. Prints a table and writes
bench/results/width.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from _results import write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _width_pref(records, metric) -> float:
    prefs = []
    cells = {}
    for rec in records:
        if "scores" not in rec:
            continue
        for frac, size in rec["truth"].items():
            if size.get("complete"):
                cells.setdefault((rec["target"], frac), []).append(
                    (rec["dim"], (rec["scores"].get(metric) or {}).get("value"),
                     size["best_acc"]))
    for cell in cells.values():
        cell = [c for c in cell if c[1] is not None and c[1] == c[1]]
        dims = [c[0] for c in cell]
        if len(cell) < 2 or len(set(dims)) < 2:
            continue
        wide = int(np.argmax(dims))
        by_metric = np.argsort(np.argsort([-c[1] for c in cell]))  # 0 = first
        by_truth = np.argsort(np.argsort([-c[2] for c in cell]))
        prefs.append((by_truth[wide] - by_metric[wide]) / (len(cell) - 1))
    return float(np.mean(prefs)) if prefs else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="none,pca:32,standardize")
    ap.add_argument("--parts", default="images,series,text,text-hard")
    args = ap.parse_args(argv)
    os.chdir(ROOT)  # the specs' paths are relative to the repository root
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_parts import make_store

    make_store(ROOT)

    from transferscope.advise.evaluation import evaluate_advice
    from transferscope.store import open_store
    from transferscope.study import load_spec
    from transferscope.study.evaluate import study_records, study_scores
    from transferscope.study.executors import make_executor
    from transferscope.study.runner import drive, main_tasks, pretrain_tasks, resolve_sources

    widths = [w.strip() for w in args.widths.split(",") if w.strip()]
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    out = {"widths": widths, "parts": parts, "rows": []}
    for width in widths:
        records = []
        for part in parts:
            spec = load_spec(ROOT / "benchmarks" / f"{part}.toml")
            spec.width = width
            store = open_store(spec.db)
            sources = resolve_sources(spec, store)
            if sources is None:  # a fresh store: the study's pretraining first
                drive(store, spec.name, pretrain_tasks(spec), make_executor("local", jobs=1),
                      f"pretraining of {part}")
                sources = resolve_sources(spec, store)
            tasks = [t for t in main_tasks(spec, sources) if t.tags["kind"] == "scores"]
            drive(store, spec.name, tasks, make_executor("local", jobs=1),
                  f"scores of {part} at width {width}")
            found = [r for r in study_records(spec, store)
                     if any(s.get("complete") for s in r["truth"].values())]
            if not found:  # no fine-tuning in this store: the saved truth, fresh scores
                saved = json.loads((ROOT / "benchmarks" / "results" / f"{part}.json")
                                   .read_text())["pairs"]
                fresh = study_scores(spec, store)
                found = [{**r, **fresh[(r["target"], r["source"])]} for r in saved
                         if (r["target"], r["source"]) in fresh]
                print(f"{part}: truth from benchmarks/results/{part}.json "
                      f"({len(found)} pairs), scores at width {width} from {spec.db}",
                      file=sys.stderr)
            records += found
        ev = evaluate_advice(records)
        for row in ev["rows"]:
            row = {"width": width, **{k: row[k] for k in ("predictor", "cells", "tau",
                                                          "tau_lo", "tau_hi", "regret")}}
            row["width_pref"] = (_width_pref(records, row["predictor"])
                                 if row["predictor"] != "advisor" else float("nan"))
            out["rows"].append(row)
    print(f"{'width':<12} {'predictor':<13} {'cells':>5} {'tau':>7} {'95% interval':>18} "
          f"{'regret':>7} {'width_pref':>10}")
    for r in out["rows"]:
        print(f"{r['width']:<12} {r['predictor']:<13} {r['cells']:>5} {r['tau']:>+7.3f} "
              f"[{r['tau_lo']:+.3f}, {r['tau_hi']:+.3f}] {r['regret']:>7.3f} "
              f"{r['width_pref']:>+10.3f}")
    means = {w: float(np.nanmean([r["tau"] for r in out["rows"]
                                  if r["width"] == w and r["predictor"] != "advisor"]))
             for w in widths}
    out["mean_tau_over_metrics"] = means
    out["best"] = max(means, key=means.get)
    print("mean tau over metrics: " + ", ".join(f"{w} {v:+.3f}" for w, v in means.items())
          + f"; best: {out['best']}")
    write_json(HERE / "results" / "width.json", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
