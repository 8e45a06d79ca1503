"""Build the benchmark's image and series data and its memorised source (deterministic, offline).

Writes into ``benchmarks/data/`` (not in git; rebuilt by this script in about a minute):

Image targets, 28 x 28 grey images in [0, 1] as ``(N, 1, 28, 28)`` ``.npz`` files, each with a
training part (100 per class; the study's ``fractions`` make the few-shot size from it) and a
disjoint test part (the study's ``test_data``):

- ``fashion-lo``: Fashion-MNIST classes 0-4 (T-shirt, trouser, pullover, dress, coat), from
  its 10,000 test images (300 per class tested);
- ``fashion-hi``: classes 5-9 (sandal, shirt, sneaker, bag, ankle boot), likewise;
- ``mnist-lo`` / ``mnist-hi``: digits 0-4 / 5-9 of the offline ``mnist5k`` (the rest of each
  class's images tested, minus 150 per class kept for the sources below).

- ``mnist1d-lo`` / ``mnist1d-hi``: classes 0-4 / 5-9 of the MNIST-1D series (Greydanus
  2020; ``(N, 1, 40)``), 100 per class for training and 200 per class tested.

Source pretraining data (disjoint from every target's):

- ``src-fashion-lo`` / ``src-fashion-hi``: 1,000 per class of Fashion-MNIST's 60,000
  training images, classes 0-4 / 5-9;
- ``src-mnist-lo`` / ``src-mnist-hi``: the 150 per class of ``mnist5k`` no target uses;
- ``src-mnist1d-lo`` / ``src-mnist1d-hi``: 200 per class of the MNIST-1D series no target uses;
- ``src-shuffled``: 300 per class of the Fashion-MNIST training images, all 10 classes, with
  their labels shuffled once. ``lenet-shuffled.safetensors`` is a LeNet trained on it to
  memorisation (selected on how well it fits those labels: Zhang et al. 2017), the
  benchmark's deliberately corrupted image source; ``src-mnist1d-shuffled`` (200 per class
  of MNIST-1D, labels shuffled) and ``fcn-shuffled.safetensors`` the same for series. The
  other sources are the studies' ``[[pretrain]]`` entries.

    python benchmarks/make_data.py            # then: python benchmarks/build.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "data"


def _save(path: Path, x, y) -> None:
    np.savez(path, X=x[:, None].astype(np.float32) / 255.0, y=np.asarray(y, dtype=np.int64))


def _take(rng, idx, y, classes, n):
    """``n`` per class of ``classes`` from positions ``idx`` (seeded), and the rest."""
    took = [rng.permutation(idx[y[idx] == c])[:n] for c in classes]
    took = np.sort(np.concatenate(took))
    return took, np.setdiff1d(idx[np.isin(y[idx], classes)], took)


def build(out: Path = OUT, seed: int = 0) -> dict[str, tuple[int, int]]:
    """Write every ``.npz`` above; returns ``{file stem: (samples, classes)}``."""
    from transferscope.data import load_dataset

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    made = {}

    def save(name, x, y):
        _save(out / f"{name}.npz", x, y)
        made[name] = (len(y), len(np.unique(y)))

    fashion = load_dataset("fashion-mnist")
    x, y = np.asarray(fashion.inputs), np.asarray(fashion.labels)
    train_pool, test_pool = np.arange(60000), np.arange(60000, len(y))
    for half, classes in (("lo", range(5)), ("hi", range(5, 10))):
        tr, rest = _take(rng, test_pool, y, classes, 100)
        te, _ = _take(rng, rest, y, classes, 300)
        save(f"fashion-{half}_train", x[tr], y[tr])
        save(f"fashion-{half}_test", x[te], y[te])
        src, _ = _take(rng, train_pool, y, classes, 1000)
        save(f"src-fashion-{half}", x[src], y[src])
    src, _ = _take(rng, train_pool, y, range(10), 300)
    save("src-shuffled", x[src], rng.permutation(y[src]))

    mnist = load_dataset("mnist5k")
    x, y = np.asarray(mnist.inputs), np.asarray(mnist.labels)
    pool = np.arange(len(y))
    for half, classes in (("lo", range(5)), ("hi", range(5, 10))):
        tr, rest = _take(rng, pool, y, classes, 100)
        src, te = _take(rng, rest, y, classes, 150)
        save(f"mnist-{half}_train", x[tr], y[tr])
        save(f"mnist-{half}_test", x[te], y[te])
        save(f"src-mnist-{half}", x[src], y[src])
    series = load_dataset("mnist1d")
    x, y = np.asarray(series.inputs, dtype=np.float32), np.asarray(series.labels)
    pool = np.arange(len(y))
    for half, classes in (("lo", range(5)), ("hi", range(5, 10))):
        tr, rest = _take(rng, pool, y, classes, 100)
        te, rest = _take(rng, rest, y, classes, 200)
        src, _ = _take(rng, rest, y, classes, 200)
        for name, idx in ((f"mnist1d-{half}_train", tr), (f"mnist1d-{half}_test", te),
                          (f"src-mnist1d-{half}", src)):
            np.savez(out / f"{name}.npz", X=x[idx], y=y[idx])
            made[name] = (len(idx), len(classes))
    src, _ = _take(rng, pool, y, range(10), 200)
    np.savez(out / "src-mnist1d-shuffled.npz", X=x[src], y=rng.permutation(y[src]))
    made["src-mnist1d-shuffled"] = (len(src), 10)
    return made


def memorise(out: Path, model: str, data_file: str, target: str, layer: str,
             epochs: int = 150, patience: int = 20) -> Path:
    """Train ``model`` from scratch on ``data_file`` until it fits its (shuffled) labels:
    85/15 split, selected on the whole source (how well it fits them, not on held-out data),
    and save its backbone as ``target``."""
    from safetensors.torch import save_file

    from transferscope.backends import create_backend
    from transferscope.config import TrainConfig, training_run
    from transferscope.data import load_dataset
    from transferscope.finetune.run import make_split, train_run

    data = load_dataset(str(out / data_file))
    backend = create_backend(model)
    train = TrainConfig(epochs=epochs, patience=patience, batch_size=64, min_steps=0,
                        lr_grid=(1.0,), augment="none", device="cpu")
    split = (0.85, 0.15)
    rc = training_run(backend, data.fingerprint, "scratch", {"lr": 1e-3, "backbone_lr": 1e-3},
                      train, seed=0, layer=layer, split=split, val_data=data.fingerprint)
    net, hist = train_run(backend, make_split(backend, data, 0, split=split, val_data=data), rc)
    print(f"{target}: fits its shuffled labels to {hist.best_val_acc:.3f} at epoch "
          f"{hist.best_epoch + 1}")
    path = out / target
    save_file({k: v.contiguous() for k, v in net.backbone.state_dict().items()}, str(path))
    return path


MEMORISED = {  # checkpoint -> (model, pretraining data, layer the head sits on)
    "lenet-shuffled.safetensors": (f"torch:{ROOT / 'examples' / 'lenet.py'}:lenet",
                                   "src-shuffled.npz", "10"),
    "fcn-shuffled.safetensors": (f"torch:{ROOT / 'examples' / 'fcn.py'}:fcn",
                                 "src-mnist1d-shuffled.npz", "3"),
}


def main(argv=None) -> int:
    """Build the data, then the memorised sources that are missing."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    out = Path(args.out)
    for name, (n, c) in build(out).items():
        print(f"{name}: {n} samples, {c} classes")
    for name, (model, data_file, layer) in MEMORISED.items():
        if not (out / name).exists():
            memorise(out, model, data_file, name, layer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
