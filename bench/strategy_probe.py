"""Does a short fine-tuning probe pick the strategy better than the advisor, the layer rule or a
constant? Measured on the project's benchmark.

    python bench/strategy_probe.py [--steps 150] [--parts images,series,text]

For every (source, target, data size) cell of the benchmark whose truth is complete
(``benchmarks/results/*.json``), the probe trains the linear probe and full fine-tuning for
``--steps`` optimiser steps each (learning rate x1 and x10 of each strategy's, the better kept)
on the cell's own training part and scores both on its validation part: the split the
benchmark's runs trained and selected on (seed 0; the test set is never read). It picks full
fine-tuning when its validation accuracy is higher. The question asked of every chooser is the
one the benchmark measured for every cell: linear probe or full fine-tuning, which reached the
higher test accuracy? Choosers: the probe, "always linear probe", "always full", the layer
rule (its linear-probe quadrant against the rest) and the advisor held out target by target
(:func:`transferscope.advise.model.loto_predictions`, its pick between the two).

Run ``python benchmarks/make_data.py`` and the studies' pretraining first (``bench/width.py``
runs it on a fresh store). Prints a table and writes bench/results/strategy_probe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from _results import write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHOICES = ("linear_probe", "full")


def probe_cell(backend, data, test, fraction, layer, steps, batch_size) -> dict:
    """Validation accuracy of each of :data:`CHOICES` after ``steps`` steps on the cell."""
    from transferscope.config import TrainConfig, training_run
    from transferscope.finetune.run import make_split, train_run
    from transferscope.progress import settings

    split = make_split(backend, data, 0, train_fraction=fraction, split=(0.8, 0.2),
                       test_data=test)
    train = TrainConfig(epochs=1, batch_size=batch_size, patience=10**6, min_steps=steps,
                        lr_grid=(1.0, 10.0), augment="auto")
    out = {}
    for strategy in CHOICES:
        rc = training_run(backend, data.fingerprint, strategy, None, train, seed=0,
                          fraction=fraction, layer=layer, split=(0.8, 0.2),
                          test_data=test.fingerprint)
        t0 = time.perf_counter()
        with settings(enabled=False):
            _, hist = train_run(backend, split, rc, device="cpu")
        out[strategy] = {"val_acc": float(hist.best_val_acc),
                         "seconds": time.perf_counter() - t0}
    return out


def main(argv=None) -> int:
    """Probe every complete cell, then compare the choosers."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--parts", default="images,series,text")
    args = ap.parse_args(argv)
    os.chdir(ROOT)

    from transferscope.advise.evaluation import rule_strategies
    from transferscope.advise.model import loto_predictions
    from transferscope.backends import create_backend
    from transferscope.store import open_store
    from transferscope.study import load_spec
    from transferscope.study.runner import resolve_sources, target_data

    records, truth, rows = [], {}, []
    for part in args.parts.split(","):
        spec = load_spec(ROOT / "benchmarks" / f"{part}.toml")
        saved = json.loads((ROOT / "benchmarks" / "results" / f"{part}.json").read_text())
        sources = resolve_sources(spec, open_store(spec.db))
        if sources is None:
            print(f"{part}: pretraining unfinished (run bench/width.py first)", file=sys.stderr)
            return 2
        records += saved["pairs"]
        for rec in saved["pairs"]:
            backend = create_backend(sources[rec["source"]])
            data = target_data(rec["target"], spec.budgets.per_class)
            test = target_data(spec.test_data[rec["target"]], None)
            for frac, size in rec["truth"].items():
                if not size.get("complete"):
                    continue
                arms = size["strategies"]
                best = max(CHOICES, key=lambda s: arms[s]["transfer_acc"])
                res = probe_cell(backend, data, test, float(frac), spec.layer, args.steps,
                                 spec.train.batch_size)
                pick = max(CHOICES, key=lambda s: (res[s]["val_acc"], s == "linear_probe"))
                key = (rec["target"], rec["source"], frac)
                truth[key] = best
                rows.append({"part": part, "target": rec["target"], "source": rec["source"],
                             "fraction": frac, "truth": best, "probe": pick,
                             "margin": arms["full"]["transfer_acc"]
                             - arms["linear_probe"]["transfer_acc"],
                             **{f"{s}_val": res[s]["val_acc"] for s in CHOICES},
                             "probe_s": sum(res[s]["seconds"] for s in CHOICES)})
                print(f"{part} {Path(rec['target']).stem} {rec['source'][-24:]} {frac}: "
                      f"truth {best}, probe {pick} (val LP {res['linear_probe']['val_acc']:.3f}"
                      f", full {res['full']['val_acc']:.3f}, "
                      f"{rows[-1]['probe_s']:.1f} s)", file=sys.stderr)
    pred = loto_predictions(records)
    ex = pred["examples"]
    rule = rule_strategies(records, ex)
    advisor, rule_pick = {}, {}
    for i, key in enumerate(ex.keys):  # the advisor's and the rule's pick between the two
        sa = pred["strategy_acc"]
        advisor[key] = max(CHOICES, key=lambda s, i=i: (sa[s][i], s == "full"))
        rule_pick[key] = "linear_probe" if rule[i] == "linear_probe" else "full"
    keys = [(r["target"], r["source"], r["fraction"]) for r in rows]
    choosers = {"probe": [r["probe"] for r in rows],
                "always linear probe": ["linear_probe"] * len(rows),
                "always full": ["full"] * len(rows),
                "layer rule": [rule_pick.get(k, "full") for k in keys],
                "advisor (held out)": [advisor.get(k, "full") for k in keys]}
    want = [truth[k] for k in keys]
    margins = np.abs([r["margin"] for r in rows])
    out = {"steps": args.steps, "cells": len(rows), "rows": rows, "choosers": {}}
    print(f"\n{'chooser':<22} {'right':>6} {'of':>4} {'accuracy':>9} "
          f"{'on cells with |margin| >= 0.02':>31}")
    for name, picks in choosers.items():
        right = np.array([p == w for p, w in zip(picks, want, strict=True)])
        clear = margins >= 0.02
        out["choosers"][name] = {"right": int(right.sum()), "accuracy": float(right.mean()),
                                 "clear_cells": int(clear.sum()),
                                 "clear_accuracy": float(right[clear].mean())}
        print(f"{name:<22} {right.sum():>6} {len(right):>4} {right.mean():>9.3f} "
              f"{right[clear].mean():>31.3f}")
    cost = np.array([r["probe_s"] for r in rows])
    out["probe_seconds_median"] = float(np.median(cost))
    print(f"probe cost per cell: median {np.median(cost):.1f} s, total {cost.sum():.0f} s")
    write_json(HERE / "results" / "strategy_probe.json", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
