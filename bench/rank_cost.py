"""What ranking costs next to fine-tuning, end to end on one machine in one run.

    python bench/rank_cost.py [--per-class 40] [--models effnet-lite:0@96,...] [--seeds 3]
                              [--epochs 20] [--skip-finetune]

Ranks the candidate models (default: the three shipped EfficientNet-Lites at two input sizes,
six models) with every baseline (each model's random-init twin and the raw input) and the
default metrics and subsamples, on a ``--per-class`` x 10 image target (mnist5k, seeded), from a
cold feature cache; then fine-tunes the same models with the default strategy against the
from-scratch arm over ``--seeds`` seeds under the default training budget (one in-memory run
store, so a scratch arm shared by two candidates trains once). Target (issue 14): rank <= 1/50
of the fine-tuning time, and the raw baseline no dearer than one candidate. Prints a table and
writes bench/results/rank_cost.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _results import write_json

HERE = Path(__file__).resolve().parent

DEFAULT_MODELS = ("effnet-lite:0@96,effnet-lite:1@96,effnet-lite:2@96,"
                  "effnet-lite:0@128,effnet-lite:1@128,effnet-lite:2@128")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, help="fine-tuning epochs (default: TrainConfig's)")
    ap.add_argument("--skip-finetune", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from transferscope.config import TrainConfig
    from transferscope.data import load_dataset, subsample
    from transferscope.finetune import finetune
    from transferscope.rank import RankConfig, rank
    from transferscope.store import MemoryRunStore

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    data = subsample(load_dataset(args.data), per_class=args.per_class, seed=0)
    cache = tempfile.mkdtemp(prefix="tscope-rank-cost-")
    cfg = RankConfig(cache_dir=cache)
    print(f"{len(models)} models on {len(data)} {data.kind}s of {args.data}; torch threads "
          f"{torch.get_num_threads()}; metrics {', '.join(cfg.metrics)}, {cfg.subsamples} "
          "subsamples, cold cache")
    start = time.perf_counter()
    result = rank(data, models, cfg)
    rank_s = time.perf_counter() - start
    per_model = {r["model"]: r["seconds"] for r in result.rows}
    candidates = [r["seconds"] for r in result.rows if r["role"] == "candidate"]
    raw_s = per_model.get("raw", float("nan"))
    print(f"rank: {rank_s:.1f} s (raw baseline {raw_s:.1f} s; candidates "
          f"{min(candidates):.1f}-{max(candidates):.1f} s each, features and metrics)")

    out = {"data": args.data, "n": len(data), "models": models, "rank_s": rank_s,
           "rank_rows": {k: round(v, 3) for k, v in per_model.items()}, "raw_s": raw_s,
           "max_candidate_s": max(candidates), "metrics": list(cfg.metrics),
           "subsamples": cfg.subsamples, "threads": torch.get_num_threads()}
    if not args.skip_finetune:
        train = TrainConfig() if args.epochs is None else TrainConfig(epochs=args.epochs)
        store = MemoryRunStore()
        ft = {}
        start = time.perf_counter()
        for m in models:
            t0 = time.perf_counter()
            res = finetune(data, m, seeds=args.seeds, config=train, store=store)
            ft[m] = {"seconds": time.perf_counter() - t0, "gain": res.gain,
                     "verdict": res.verdict}
            print(f"finetune {m}: {ft[m]['seconds']:.1f} s, gain {res.gain[0]:+.3f} "
                  f"[{res.gain[1]:+.3f}, {res.gain[2]:+.3f}] {res.verdict}")
        ft_s = time.perf_counter() - start
        out.update(finetune_s=ft_s, finetune=ft, train=train.identity(),
                   ratio=ft_s / rank_s)
        print(f"\n| step | seconds |\n|---|---|\n| rank ({len(models)} models, twins, raw) | "
              f"{rank_s:.1f} |\n| fine-tune ({len(models)} x {args.seeds} seeds, scratch arms) "
              f"| {ft_s:.1f} |\n| fine-tune / rank | {ft_s / rank_s:.1f}x (target >= 50x) |\n"
              f"| raw baseline / slowest candidate | {raw_s / max(candidates):.2f} "
              "(target <= 1) |")
    write_json(HERE / "results" / "rank_cost.json", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
