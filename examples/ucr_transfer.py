"""Pretrain an FCN on one bundled UCR dataset, then fine-tune it on another against an FCN
trained from scratch (the protocol of Fawaz et al. 2018, on the data that ships offline).

    python examples/ucr_transfer.py --source ArrowHead --target GunPoint --seeds 3
    python examples/ucr_transfer.py --source ArrowHead --target GunPoint --fractions 0.1,0.25,1

Writes the source checkpoint (safetensors) under --out and prints the verdict table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pretrain(source: str, out: Path, epochs: int) -> Path:
    from safetensors.torch import save_file

    from transferscope.backends import create_backend
    from transferscope.data import load_dataset, stratified_split
    from transferscope.finetune import TrainConfig, TransferModel, make_strategy
    from transferscope.finetune.run import _tensors
    from transferscope.finetune.trainer import fit

    data = load_dataset(f"ucr:{source}")
    backend = create_backend(f"torch:{HERE / 'fcn.py'}:fcn")
    tr_i, va_i, _ = stratified_split(data.labels, (0.7, 0.15, 0.15), seed=0)
    n_classes = len(set(data.labels.tolist()))
    model = TransferModel(backend, n_classes, layer="4")
    hist = fit(model, make_strategy("scratch", backbone_lr=1e-3, lr=1e-3),
               _tensors(backend, data, tr_i), _tensors(backend, data, va_i),
               TrainConfig(epochs=epochs, batch_size=16, patience=15, seed=0, device="cpu"))
    print(f"pretrained on {source}: best val acc {hist.best_val_acc:.3f} "
          f"(epoch {hist.best_epoch}, {hist.wall_s:.0f}s)")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fcn_{source}.safetensors"
    # the backbone only: the source head is not transferred
    save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()}, str(path))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="ArrowHead")
    ap.add_argument("--target", default="GunPoint")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pretrain-epochs", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--strategy", default="full")
    ap.add_argument("--fraction", type=float, default=None)
    ap.add_argument("--fractions", help="learning curves over fractions of the training split")
    ap.add_argument("--out", default="/tmp/transferscope-examples")
    args = ap.parse_args(argv)

    from transferscope.data import load_dataset, subsample
    from transferscope.finetune import TrainConfig, finetune, learning_curves
    from transferscope.tables import render

    ckpt = pretrain(args.source, Path(args.out), args.pretrain_epochs)
    target = subsample(load_dataset(f"ucr:{args.target}"), fraction=args.fraction, seed=0)
    kw = dict(seeds=args.seeds, layer="4",
              config=TrainConfig(epochs=args.epochs, batch_size=16, patience=10, seed=0,
                                 device="cpu"),
              strategy_options={"lr": 1e-3, "backbone_lr": 1e-3},
              baseline_options={"lr": 1e-3, "backbone_lr": 1e-3})
    model = f"torch:{HERE / 'fcn.py'}:fcn@{ckpt}"
    if args.fractions:
        curves = learning_curves(target, model, args.strategy,
                                 fractions=[float(f) for f in args.fractions.split(",")], **kw)
        print(f"\n{args.source} -> {args.target}, strategy {args.strategy}")
        print(render(curves["points"]))
        print(f"break-even fraction: {curves['break_even_fraction']}")
        return 0
    res = finetune(target, model, args.strategy, **kw)
    print(f"\n{args.source} -> {args.target} ({len(target)} series), strategy {args.strategy}")
    print(render(res.arms))
    g, lo, hi = res.gain
    print(f"gain {g:+.4f} [{lo:+.4f}, {hi:+.4f}] -> {res.verdict}\n{res.rule}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
