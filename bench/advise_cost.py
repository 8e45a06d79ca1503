"""What advice costs next to fine-tuning the same models, on one benchmark target.

    python bench/advise_cost.py [--part images] [--target fashion-lo] [--layers]

``tscope advise`` on a benchmark target (fashion-lo: 100 images per class) for the sources of
a benchmark part (``images``: its six LeNets; ``shipped-images``: EfficientNet-Lite0 at 32 px),
from a cold feature cache (as ``tscope advise`` does by default: scores once, no layer
profiles; ``--layers`` adds the profiles for the cut and head width), against fine-tuning the
same models with the "full" strategy under the part's protocol (3 seeds, at least 500 steps,
the learning rate chosen from the part's grid), their from-scratch arms left out. The
fine-tuning runs are the part's study's (its store, e.g. ``benchmarks/store/images.db``), their
wall times as stored; a run the study has not finished is trained here and stored there.
Target (issue 16): advise <= 1/20 of the fine-tuning time. Prints a table and writes
bench/results/advise_cost[_<part>][_layers].json (no part suffix for ``images``).

Run ``python benchmarks/make_data.py`` and, for ``images``, the image study's pretraining
first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _results import write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="images", choices=["images", "shipped-images"])
    ap.add_argument("--target", default="fashion-lo")
    ap.add_argument("--layers", action="store_true")
    args = ap.parse_args(argv)

    import os

    import torch

    from transferscope.advise.api import advise
    from transferscope.data import load_dataset
    from transferscope.finetune import finetune
    from transferscope.names import parse_model_name
    from transferscope.store import open_store
    from transferscope.study import load_spec
    from transferscope.study.runner import resolve_sources

    os.chdir(ROOT)  # the spec's paths are relative to the repository root
    spec = load_spec(ROOT / "benchmarks" / f"{args.part}.toml")
    store = open_store(spec.db)
    sources = resolve_sources(spec, store)
    if sources is None:
        print(f"the {args.part} study has not finished pretraining: tscope study run "
              f"benchmarks/{args.part}.toml", file=sys.stderr)
        return 2
    target = f"benchmarks/data/{args.target}_train.npz"
    data, test = load_dataset(target), load_dataset(spec.test_data[target])
    models = list(sources.values())
    print(f"{len(models)} models on {len(data)} images of {args.target}; torch threads "
          f"{torch.get_num_threads()}")
    start = time.perf_counter()
    result = advise(data, models, layers=args.layers,
                    cache_dir=tempfile.mkdtemp(prefix="tscope-advise-cost-"))
    advise_s = time.perf_counter() - start
    finetune_s, trained_here = {}, 0
    for m in models:
        before = len(store.list(state="finished"))
        res = finetune(data, m, "full", seeds=spec.seeds, config=spec.train, layer=spec.layer,
                       store=store, test_data=test,
                       strategy_options=spec.strategy_options.get("full"),
                       baseline_options=spec.strategy_options.get("scratch"))
        trained_here += len(store.list(state="finished")) - before
        arm = next(a for a in res.arms if a["arm"] == "transfer")
        finetune_s[m] = arm["train_s"] * arm["seeds"]  # the runs' wall times, as stored
    total = sum(finetune_s.values())
    ratio = advise_s / total
    rows = [{"model": parse_model_name(r["model"]).short(60), "pred_acc": round(r["pred_acc"], 3),
             "p_beats": round(r["p_beats_scratch"], 2), "strategy": r["strategy"],
             "finetune_s": round(finetune_s[r["model"]], 1)} for r in result.rows]
    for r in rows:
        print(f"  {r['model']:<60} {r['finetune_s']:>8.1f} s fine-tuning")
    print(f"advise on {len(models)} models: {advise_s:.1f} s; fine-tuning them (full, "
          f"{spec.seeds} seeds, transfer arm): {total:.1f} s; ratio 1/{1 / ratio:.0f} "
          f"(target <= 1/20: {'met' if ratio <= 1 / 20 else 'NOT met'}); runs trained here: "
          f"{trained_here}")
    part = "" if args.part == "images" else f"_{args.part}"
    write_json(HERE / "results" / f"advise_cost{part}{'_layers' if args.layers else ''}.json",
               {"part": args.part, "target": args.target, "models": len(models),
                "layers": args.layers,
                "advise_s": advise_s, "finetune_s": total, "ratio": ratio,
                "met": ratio <= 1 / 20, "rows": rows, "threads": torch.get_num_threads()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
