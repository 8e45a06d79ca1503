"""Trainer overhead per epoch over a minimal hand-written loop, same model, data and batches.

    python bench/finetune.py [--n 2000] [--epochs 3] [--batch-size 64]

The model is a small CNN on 32 x 32 inputs (digits upsampled), trained fully (strategy "full").
The minimal loop does what any loop must: AdamW steps over shuffled batches and one validation
pass per epoch. The trainer adds warm-up/cosine scheduling, gradient clipping, per-epoch metrics,
best-state tracking and early-stopping bookkeeping. Target: at most 10 % slower per epoch.
Prints a table and writes bench/results/finetune.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_json
from torch import nn

HERE = Path(__file__).resolve().parent


def make_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default=str(HERE / "results" / "finetune.json"))
    args = ap.parse_args(argv)

    from transferscope.backends.simple import UserModuleBackend
    from transferscope.finetune import TrainConfig, TransferModel, make_strategy, train

    rng = np.random.default_rng(0)
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = rng.choice(len(d.target), args.n, replace=True)
    x = torch.tensor(d.images[idx] / 16.0, dtype=torch.float32)[:, None].repeat(1, 3, 1, 1)
    x = nn.functional.interpolate(x, size=(32, 32), mode="bilinear")
    y = torch.tensor(d.target[idx])
    n_tr = int(0.8 * args.n)
    tr, va = (x[:n_tr], y[:n_tr]), (x[n_tr:], y[n_tr:])
    backend = UserModuleBackend("bench-cnn", make_net())

    def minimal():
        model = TransferModel(backend, 10, layer="11")
        model.build_head(tr[0][:2])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        g = np.random.default_rng(0)
        times = []
        for _ in range(args.epochs):
            t = time.perf_counter()
            model.train()
            for b in np.array_split(g.permutation(n_tr), int(np.ceil(n_tr / args.batch_size))):
                loss = nn.functional.cross_entropy(model(tr[0][b]), tr[1][b])
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.inference_mode():
                (model(va[0]).argmax(1) == va[1]).float().mean().item()
            times.append(time.perf_counter() - t)
        return times

    def trainer():
        model = TransferModel(backend, 10, layer="11")
        times, last = [], [time.perf_counter()]

        def tick(row):
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=99,
                          seed=0, device="cpu")
        last[0] = time.perf_counter()
        train(model, make_strategy("full", lr=1e-3, backbone_lr=1e-3), tr, va, cfg,
              on_epoch=tick)
        return times

    minimal()  # warm-up
    t_min = min(np.median(minimal()) for _ in range(2))
    t_tr = min(np.median(trainer()) for _ in range(2))
    row = {"n_train": n_tr, "batch_size": args.batch_size, "epochs": args.epochs,
           "minimal_epoch_s": float(t_min), "trainer_epoch_s": float(t_tr),
           "overhead": float(t_tr / t_min - 1), "torch_threads": torch.get_num_threads()}
    print(f"{'n_train':>8s} {'batch':>6s} {'minimal s/epoch':>16s} {'trainer s/epoch':>16s} "
          f"{'overhead':>9s}")
    print(f"{n_tr:8d} {args.batch_size:6d} {t_min:16.3f} {t_tr:16.3f} {row['overhead']:+9.1%}")
    write_json(args.out, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
