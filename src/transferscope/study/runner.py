"""Expand a study into runs, skip the finished ones, execute the rest, record every result.

Phases: pretraining (``[[pretrain]]`` entries; their checkpoints become ``pretrained:<name>``
sources), then for every target the transferability scores of each source (on the training
part of the split) and the fine-tuning runs: each (source, strategy, fraction, seed) transfer
arm, and each (architecture, fraction, seed) scratch arm, shared by the sources of one
architecture because a re-initialised model does not depend on its pretrained weights.

The driver alone writes the store, and a run is written (epochs, then the finished state) only
when its result is in, so a crash or ``kill -9`` loses the runs in flight and nothing else;
the next ``tscope study run`` skips every finished run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from dataclasses import dataclass

from transferscope.errors import InputError
from transferscope.store import RunStore
from transferscope.study.executors import make_executor
from transferscope.study.spec import StudySpec
from transferscope.study.worker import backend, execute, sha256_file, target_data


@dataclass
class Task:
    record: dict  # what identifies the run in the store (hashed with the seed)
    seed: int
    payload: dict  # what the worker needs
    label: str


def architecture_id(b) -> str:
    """The model without its weights: module class, parameter shapes, preprocessing. Scratch
    runs are keyed by it, so sources of one architecture share their scratch baseline."""
    shapes = sorted((k, tuple(v.shape)) for k, v in b.module.state_dict().items())
    h = hashlib.sha256(repr(shapes).encode()).hexdigest()[:16]
    rest = [p for p in b.identity().split("|")[1:] if not p.startswith("w=")]
    return "|".join([f"arch={type(b.module).__name__}", f"shapes={h}", *rest])


class Progress:
    """Runs done of total, failures, elapsed time and ETA on one stderr line (TTY only)."""

    def __init__(self, label: str, total: int, enabled: bool | None = None):
        self.label, self.total, self.done, self.failed = label, total, 0, 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = time.perf_counter()

    def step(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        sys.stderr.write(f"\r{self.label}: {self.done}/{self.total} runs, {self.failed} failed, "
                         f"{elapsed / 60:.1f} min, ETA {eta / 60:.1f} min"
                         + ("\n" if self.done >= self.total else ""))
        sys.stderr.flush()


def pretrain_tasks(spec: StudySpec) -> list[Task]:
    tasks = []
    for p in spec.pretrain:
        out = spec.artifacts_dir / f"{p.name}.safetensors"
        record = {"kind": "pretrain", **dataclasses.asdict(p),
                  "model_identity": backend(p.model).identity(),
                  "data_fp": target_data(p.data, None).fingerprint}
        tasks.append(Task(record, p.seed, {"kind": "pretrain", "pretrain":
                                           dataclasses.asdict(p), "out": str(out)},
                          f"pretrain {p.name}"))
    return tasks


def resolve_sources(spec: StudySpec, store: RunStore) -> dict[str, str] | None:
    """Source name -> loadable model name (``pretrained:<name>`` -> ``torch:...@<ckpt>``);
    None while some pretraining has not finished."""
    found = {}
    for task in pretrain_tasks(spec):
        run = store.find(task.record, task.seed)
        if run is None or run["state"] != "finished":
            return None
        ckpt = run["artifacts"]["checkpoint"]
        try:
            same = sha256_file(ckpt) == run["artifacts"]["sha256"]
        except OSError:
            same = False
        if not same:
            raise InputError(f"Expected the checkpoint of pretrain {task.record['name']!r} at "
                             f"{ckpt}, got it missing or changed; restore it, or delete run "
                             f"{run['id']} from {spec.db} to pretrain again")
        found[task.record["name"]] = f"{task.record['model']}@{ckpt}"
    return {s: found[s.partition(":")[2]] if s.startswith("pretrained:") else s
            for s in spec.sources}


def main_tasks(spec: StudySpec, sources: dict[str, str]) -> list[Task]:
    """Sources outer, targets inner: each source model is loaded and hashed once."""
    pre = {p.name: p for p in spec.pretrain}
    per_class = spec.budgets.per_class
    train_base = dataclasses.asdict(spec.train)
    common = {t: {"target": t, "per_class": per_class, "split_seed": 0, "layer": spec.layer}
              for t in spec.targets}
    archs = {t: {} for t in spec.targets}  # target -> architecture -> a model of it
    tasks = []
    for source, model in sources.items():
        p = pre.get(source.partition(":")[2]) if source.startswith("pretrained:") else None
        b = backend(model)
        identity, arch = b.identity(), architecture_id(b)
        for target in spec.targets:
            if spec.exclude_self and p is not None and p.data == target:
                continue  # a source is not transferred to its own pretraining data
            data = target_data(target, per_class)
            b.check_input(data)
            fp = data.fingerprint
            archs[target].setdefault(arch, model)
            tasks.append(Task(
                {"kind": "scores", "target": target, "source": source, "data": fp,
                 "model": identity, "arch": arch, "metrics": list(spec.metrics),
                 "layer": spec.layer,
                 "bootstrap": spec.budgets.bootstrap, "split_seed": 0}, 0,
                {"kind": "scores", **common[target], "model": model,
                 "metrics": list(spec.metrics), "bootstrap": spec.budgets.bootstrap},
                f"scores {source} -> {target}"))
            for strategy in spec.strategies:
                for fraction in spec.fractions:
                    tasks += _train_tasks(spec, common[target], fp, "transfer", source,
                                          identity, arch, model, strategy, fraction,
                                          train_base)
    for target in spec.targets:
        fp = target_data(target, per_class).fingerprint
        for arch, model in archs[target].items():
            for fraction in spec.fractions:
                tasks += _train_tasks(spec, common[target], fp, spec.baseline, None, arch,
                                      arch, model, spec.baseline, fraction, train_base)
    return tasks


def _train_tasks(spec, common, fp, arm, source, model_id, arch, model, strategy, fraction,
                 train):
    options = spec.strategy_options.get(strategy, {})
    out = []
    for s in range(spec.seeds):
        cfg = dict(train, seed=train["seed"] + s)
        record = {"kind": "train", "target": common["target"], "source": source, "data": fp,
                  "model": model_id, "arch": arch, "arm": arm, "strategy": strategy,
                  "options": options,
                  "layer": spec.layer, "train": cfg, "split_seed": 0,
                  "train_fraction": fraction}
        payload = {"kind": "train", **common, "model": model, "strategy": strategy,
                   "options": options, "train": cfg, "fraction": fraction}
        out.append(Task(record, cfg["seed"], payload,
                        f"{arm} {source or model_id[:20]} -> {common['target']} f={fraction}"))
    return out


def drive(store: RunStore, study: str, tasks: list[Task], ex, progress: Progress | None = None,
          fn=execute) -> dict:
    """Run the tasks not finished yet; write each result as it arrives."""
    todo = []
    for t in tasks:
        run = store.find(t.record, t.seed)
        if run is None or run["state"] != "finished":
            todo.append(t)
    bar = progress or Progress(study, len(todo))
    bar.total = len(todo)
    failed = []
    for j, result, error in ex.run(fn, [t.payload for t in todo]):
        t = todo[j]
        handle = store.start(t.record, t.seed, study=study)
        if handle is None:  # finished meanwhile by another driver
            bar.step(True)
            continue
        if error is not None:
            store.fail(handle, f"{type(error).__name__}: {error}")
            failed.append((t.label, f"{type(error).__name__}: {error}"))
        else:
            for row in result.get("epochs", []):
                store.log_epoch(handle, row["epoch"], row)
            store.finish(handle, result["metrics"], timings=result.get("timings"),
                         artifacts=result.get("artifacts"))
        bar.step(error is None)
    return {"planned": len(tasks), "ran": len(todo), "reused": len(tasks) - len(todo),
            "failed": failed}


def run_study(spec: StudySpec, *, executor: str = "local", jobs: int = 1,
              address: str | None = None, progress: bool | None = None, cpus: float = 1,
              gpus: float = 0) -> dict:
    store = RunStore(spec.db)
    # one driver per study: whatever a killed driver left "running" is failed, to be redone
    store.mark_stale(older_than_s=0, study=spec.name)
    ex = make_executor(executor, jobs=jobs, address=address, cpus=cpus, gpus=gpus)
    summary = {}
    pre = pretrain_tasks(spec)
    if pre:
        summary["pretrain"] = drive(store, spec.name, pre, ex,
                                    Progress(f"{spec.name} pretrain", 0, progress))
        if summary["pretrain"]["failed"]:
            raise InputError(f"Expected every pretraining to finish, got failures: "
                             f"{summary['pretrain']['failed'][:2]}")
    sources = resolve_sources(spec, store)
    summary["main"] = drive(store, spec.name, main_tasks(spec, sources), ex,
                            Progress(spec.name, 0, progress))
    return summary


def study_status(spec: StudySpec) -> dict:
    store = RunStore(spec.db)
    pre = pretrain_tasks(spec)
    counts = {"pretrain": _count(store, pre)}
    sources = resolve_sources(spec, store)
    if sources is None:
        counts["main"] = "waiting for pretraining"
        return counts
    tasks = main_tasks(spec, sources)
    for kind in ("scores", "train"):
        counts[kind] = _count(store, [t for t in tasks if t.record["kind"] == kind])
    return counts


def _count(store, tasks) -> dict:
    c = {"planned": len(tasks), "finished": 0, "failed": 0, "running": 0, "pending": 0}
    for t in tasks:
        run = store.find(t.record, t.seed)
        c["pending" if run is None else run["state"]] += 1
    return c
