"""What one study task does, in whatever process or Ray worker runs it: pretrain a source,
score a (target, source) pair, or train one arm for one seed (and fold). Tasks are plain dicts
and results plain JSON-able dicts, so any executor can carry them; workers never write the
store.
"""

from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path

from transferscope.backends import create_backend
from transferscope.data import load_dataset, subsample


@functools.lru_cache(maxsize=8)
def target_data(spec: str, per_class: int | None):
    """A study target, subsampled to ``per_class`` (seed 0), or with ``None`` a dataset as
    it is (a target's validation or test set); cached per process."""
    return subsample(load_dataset(spec), per_class=per_class, seed=0)


@functools.lru_cache(maxsize=4)
def backend(name: str):
    """The backend of a model name; cached per process (each source loads once)."""
    return create_backend(name)


def execute(task: dict) -> dict:
    """Run one task (``kind``: pretrain, scores or train; ``label`` names it in progress);
    returns JSON-able ``metrics``, ``epochs``, ``timings`` and ``artifacts``."""
    kind = task["kind"]
    start = time.perf_counter()
    result = {"pretrain": _pretrain, "scores": _scores, "train": _train}[kind](task)
    result.setdefault("timings", {})["wall_s"] = time.perf_counter() - start
    return result


def _train(task: dict) -> dict:
    from transferscope.config import RunConfig
    from transferscope.finetune.run import correct_on, run_metrics, split_of, train_run

    rc = RunConfig.from_dict(task["run"])  # the run's identity is also what trains it
    data = target_data(task["target"], task["per_class"])
    given = {k: target_data(task[k], None) if task.get(k) else None
             for k in ("val_data", "test_data")}  # used whole, as finetune uses them
    b = backend(task["model"])
    split = split_of(b, data, rc, **given)  # checked against the run's fingerprints
    epochs = []  # every epoch of every learning rate tried, as finetune logs them
    net, hist = train_run(b, split, rc, label=task.get("label"), on_epoch=epochs.append)
    return {"metrics": run_metrics(net, hist, correct_on(net, split.test), split.idx[2]),
            "epochs": epochs, "timings": {"train_s": hist.wall_s}}


def _scores(task: dict) -> dict:
    from transferscope.data import training_part
    from transferscope.rank import RankConfig, rank

    data = target_data(task["target"], task["per_class"])
    # the transferability scores see the training part of the fine-tuning split only
    part = training_part(data, task["split_seed"])
    cfg = RankConfig(metrics=tuple(task["metrics"]), subsamples=task["subsamples"],
                     layer=task["layer"], seed=0, width=task.get("width", "none"))
    res = rank(part, [task["model"]], cfg)
    return {"metrics": {"rows": res.rows, "rule": res.rule}}


def _pretrain(task: dict) -> dict:
    from safetensors.torch import save_file

    from transferscope.config import RunConfig
    from transferscope.finetune.run import make_split, train_run

    rc = RunConfig.from_dict(task["run"])  # a scratch run on the source data, no test part used
    data = load_dataset(task["data"])
    b = create_backend(task["model"])
    net, hist = train_run(b, make_split(b, data, rc.split_seed, rc.fraction, rc.split), rc,
                          label=task.get("label"))
    out = Path(task["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    # the backbone only: the source head is not transferred
    save_file({k: v.detach().cpu().contiguous() for k, v in net.backbone.state_dict().items()},
              str(tmp))
    tmp.replace(out)  # atomic: a checkpoint is complete or absent
    return {"metrics": {"val_acc": hist.best_val_acc, "best_epoch": hist.best_epoch},
            "epochs": hist.epochs, "artifacts": {"checkpoint": str(out),
                                                 "sha256": sha256_file(out)},
            "timings": {"train_s": hist.wall_s}}


def sha256_file(path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
