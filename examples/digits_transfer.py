"""Digits transfer cases for the verdict: a LeNet-5 pretrained on MNIST digits 0-4 (true or
shuffled labels), fine-tuned on digits 5-9 with 20 images per class, against the same LeNet
from scratch, tested on the other ~2,400 images of digits 5-9 (the offline ``mnist5k``); or
the same with Fashion-MNIST classes (``--dataset fashion-mnist``: a 30,000-image source).

    python examples/digits_transfer.py --out /tmp/digits     # data and sources, ~1 minute
    python examples/digits_transfer.py --out /tmp/fashion --dataset fashion-mnist --sources true

then, e.g. (the commands are printed at the end):

    tscope finetune --data /tmp/digits/target_train.npz --test-data /tmp/digits/target_test.npz \
        --model torch:examples/lenet.py:lenet@/tmp/digits/lenet_true.safetensors \
        --strategy full --layer 10 --check-budget --no-db

Sources (each saved as its backbone, safetensors):

- ``lenet_true``: trained on digits 0-4 with their labels (a related task: strokes and parts
  that digits 5-9 share);
- ``lenet_shuffled``: trained on the same images with labels shuffled once, to memorisation
  (Zhang et al. 2017, "Understanding deep learning requires rethinking generalization"):
  features fitted to noise; Maennel et al. 2020 ("What do neural networks learn when trained
  with random labels?") find such pretraining can help or hurt a later task.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL = f"torch:{HERE / 'lenet.py'}:lenet"


def _save(path: Path, x, y) -> None:
    np.savez(path, X=x[:, None].astype(np.float32) / 255.0, y=y)  # (N, 1, 28, 28) in [0, 1]


def prepare_data(out: Path, per_class: int = 20, small_test: int = 8, seed: int = 0,
                 dataset: str = "mnist5k", same_classes: bool = False) -> None:
    """``source.npz`` (classes 0-4), ``source_shuffled.npz`` (their labels shuffled),
    ``target_train.npz`` (``per_class`` of each of 5-9), ``target_test.npz`` (the rest of 5-9),
    ``target_test_small.npz`` (``small_test`` of each class of that test set).

    ``mnist5k``: the 5,000 digits split by class. ``fashion-mnist``: the source is classes 0-4
    (T-shirt, trouser, pullover, dress, coat) of the 60,000 training images, the target classes
    5-9 (sandal, shirt, sneaker, bag, ankle boot) of the 10,000 test images: disjoint images
    and classes, a related domain. ``same_classes`` (Fashion-MNIST): the source is all 10
    classes of the training images, the target all 10 classes of the test images (the same
    task on new images: a model pretrained on a large set of the same kind)."""
    from transferscope.data import load_dataset

    data = load_dataset(dataset)
    x, y = np.asarray(data.inputs), np.asarray(data.labels)
    rng = np.random.default_rng(seed)
    pool = np.arange(len(y)) >= 60000 if dataset == "fashion-mnist" else np.ones(len(y), bool)
    src = (y < 5) & ~pool if dataset == "fashion-mnist" else y < 5
    if same_classes:  # Fashion-MNIST only: every class, training images vs test images
        src = ~pool
        y = y + 5 * pool  # target classes 5-14: the same garments under new class codes
    _save(out / "source.npz", x[src], y[src])
    _save(out / "source_shuffled.npz", x[src], rng.permutation(y[src]))
    tgt = np.flatnonzero((y >= 5) & pool)  # with same_classes: all of the pool
    train, small = [], []
    for c in np.unique(y[tgt]):
        members = rng.permutation(tgt[y[tgt] == c])
        train.append(members[:per_class])
        small.append(members[per_class:per_class + small_test])
    train = np.sort(np.concatenate(train))
    test = np.setdiff1d(tgt, train)
    _save(out / "target_train.npz", x[train], y[train])
    _save(out / "target_test.npz", x[test], y[test])
    small = np.sort(np.concatenate(small))
    _save(out / "target_test_small.npz", x[small], y[small])


def pretrain(out: Path, name: str, data_file: str, epochs: int, patience: int,
             memorise: bool = False) -> Path:
    """Train LeNet from scratch on a source file (70/15/15 split, selected on validation; with
    ``memorise``, 85/15 and selected on the whole source, i.e. on how well it fits its labels)
    and save its backbone."""
    from safetensors.torch import save_file

    from transferscope.backends import create_backend
    from transferscope.config import TrainConfig, training_run
    from transferscope.data import load_dataset
    from transferscope.finetune.run import make_split, train_run

    data = load_dataset(str(out / data_file))
    backend = create_backend(MODEL)
    train = TrainConfig(epochs=epochs, patience=patience, batch_size=64, min_steps=0,
                        lr_grid=(1.0,), augment="none", device="cpu")
    split = (0.85, 0.15) if memorise else (0.7, 0.15, 0.15)
    val = data if memorise else None
    rc = training_run(backend, data.fingerprint, "scratch", {"lr": 1e-3, "backbone_lr": 1e-3},
                      train, seed=0, layer="10", split=split,
                      val_data=data.fingerprint if memorise else "")
    net, hist = train_run(backend, make_split(backend, data, 0, split=split, val_data=val), rc)
    last = hist.epochs[-1]
    print(f"{name}: best validation accuracy {hist.best_val_acc:.3f} at epoch "
          f"{hist.best_epoch + 1}; last train accuracy {last['train_acc']:.3f}")
    path = out / f"lenet_{name}.safetensors"
    save_file({k: v.contiguous() for k, v in net.backbone.state_dict().items()}, str(path))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/digits")
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "fashion-mnist"))
    ap.add_argument("--same-classes", action="store_true",
                    help="Fashion-MNIST: source and target share all 10 classes")
    ap.add_argument("--sources", default="true,shuffled",
                    help="which sources to pretrain (memorising 30,000 shuffled Fashion-MNIST "
                         "labels takes long: --sources true there)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.same_classes and args.dataset != "fashion-mnist":
        ap.error("--same-classes needs --dataset fashion-mnist")
    prepare_data(out, args.per_class, dataset=args.dataset, same_classes=args.same_classes)
    names = [n for n in args.sources.split(",") if n]
    if "true" in names:
        pretrain(out, "true", "source.npz", epochs=30, patience=5)
    if "shuffled" in names:
        pretrain(out, "shuffled", "source_shuffled.npz", epochs=150, patience=20,
                 memorise=True)
    for name in names:
        print(f"tscope finetune --data {out}/target_train.npz --test-data "
              f"{out}/target_test.npz --model {MODEL}@{out}/lenet_{name}.safetensors "
              "--strategy full --layer 10 --check-budget --no-db")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
