"""Train the two LeNet-5 sources the package ships for ``tscope demo`` (deterministic, offline,
about 3 minutes on one core): ``src/transferscope/zoo/lenet-mnist.safetensors`` (the 10 digit
classes of ``mnist5k``, 70/15/15 split, selected on validation) and
``lenet-shuffled.safetensors`` (3,000 of those images with labels shuffled once, trained to
memorisation, selected on the source itself). See :mod:`transferscope.zoo`.

    python benchmarks/make_zoo.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from make_data import _save, _take, memorise


def main() -> int:
    """Build both checkpoints into the package's ``zoo`` folder."""
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
