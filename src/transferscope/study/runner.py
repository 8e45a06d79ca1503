"""Expand a study into runs, skip the finished ones, execute the rest, record every result.

Phases: pretraining (``[[pretrain]]`` entries; their checkpoints become ``pretrained:<name>``
sources), then for every target the transferability scores of each source (on the training
part of the split) and the fine-tuning runs: each (source, strategy, fraction, seed) transfer
arm, and each (architecture, fraction, seed) scratch arm, shared by the sources of one
architecture because a re-initialised model does not depend on its pretrained weights. A
seed is one run, or with cross-validation one run per fold; with ``check_budget`` the
baseline also trains at twice the budget. Every training run is planned as ``tscope
finetune`` plans it (:func:`_train_tasks`), so the two reuse each other's runs.

The driver alone writes the store, and a run is written (epochs, then the finished state) only
when its result is in, so a crash or ``kill -9`` loses the runs in flight and nothing else;
the next ``tscope study run`` skips every finished run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferscope.config import RunConfig, TrainConfig, training_run
from transferscope.errors import InputError, note
from transferscope.finetune.run import (
    default_split,
    doubled_budget,
    heldout_fingerprints,
    resolve_folds,
)
from transferscope.finetune.strategies import resolved_options
from transferscope.metrics import model_metrics
from transferscope.names import parse_model_name
from transferscope.progress import duration, override, unit
from transferscope.store import RunStore, open_store
from transferscope.study.executors import make_executor
from transferscope.study.spec import StudySpec
from transferscope.study.worker import backend, execute, sha256_file, target_data

PRETRAIN_SPLIT = (0.7, 0.15, 0.15)


@dataclass
class Task:
    """One planned run: its identity, the names the study gives it, what the worker needs.

    Attributes
    ----------
    config : RunConfig
        The run's identity (its store key).
    tags : dict
        ``kind``, ``target``, ``source``, ``arm``, ``strategy``, ``fraction``, ``arch``,
        ``target_size`` (what the default folds follow, for ``study evaluate``), ...
    payload : dict
        Plain data for :func:`transferscope.study.worker.execute`.
    label : str
        For progress and failure messages.
    """

    config: RunConfig
    tags: dict
    payload: dict
    label: str


def pretrain_tasks(spec: StudySpec) -> list[Task]:
    """One task per ``[[pretrain]]`` entry: the source trained from scratch on its data."""
    tasks = []
    for p in spec.pretrain:
        b = backend(p.model)
        out = spec.artifacts_dir / f"{p.name}.safetensors"
        # a source is trained as its entry says: its epochs and lr, no floor, no search
        train = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, patience=p.patience,
                            seed=p.seed, min_steps=0, lr_grid=(1.0,))
        config = RunConfig(kind="pretrain", data=target_data(p.data, None).fingerprint,
                           model=b.identity(), seed=p.seed, strategy="scratch",
                           strategy_config=resolved_options("scratch", {"lr": p.lr,
                                                                        "backbone_lr": p.lr}),
                           train=train.identity(), split=PRETRAIN_SPLIT, split_seed=p.seed,
                           layer=p.layer or b.default_layer())
        tasks.append(Task(config, {"kind": "pretrain", "name": p.name, "data": p.data},
                          {"kind": "pretrain", "data": p.data, "model": p.model,
                           "run": config.to_dict(), "out": str(out)}, f"pretrain {p.name}"))
    return tasks


def resolve_sources(spec: StudySpec, store: RunStore) -> dict[str, str] | None:
    """Source name -> loadable model name (``pretrained:<name>`` -> ``torch:...@<ckpt>``);
    None while some pretraining has not finished."""
    found = {}
    for task in pretrain_tasks(spec):
        run = store.find(task.config)
        if run is None or run["state"] != "finished":
            return None
        ckpt = run["artifacts"]["checkpoint"]
        try:
            same = sha256_file(ckpt) == run["artifacts"]["sha256"]
        except OSError:
            same = False
        name = task.tags["name"]
        if not same:
            raise InputError(f"Expected the checkpoint of pretrain {name!r} at {ckpt}, got it "
                             f"missing or changed; restore it, or delete run {run['id']} from "
                             f"{spec.db} to pretrain again")
        found[name] = f"{task.payload['model']}@{ckpt}"
    out = {}
    for s in spec.sources:
        parsed = parse_model_name(s)
        out[s] = found[parsed.arg] if parsed.is_pretrained_entry else s
    return out


def main_tasks(spec: StudySpec, sources: dict[str, str]) -> list[Task]:
    """Sources outer, targets inner: each source model is loaded and hashed once. A target's
    baseline runs for an architecture come right before the first transfer runs that need
    them, so an interrupted study has complete pairs to evaluate."""
    pre = {p.name: p for p in spec.pretrain}
    per_class = spec.budgets.per_class
    common = {t: _protocol(spec, t) for t in spec.targets}
    archs = {t: {} for t in spec.targets}  # target -> architecture -> a model of it
    tasks = []
    _, head_metrics = model_metrics(spec.metrics, "a study")
    headless = []
    for source, model in sources.items():
        parsed = parse_model_name(source)
        p = pre.get(parsed.arg) if parsed.is_pretrained_entry else None
        b = backend(model)
        if head_metrics and b.head_layer() is None:
            headless.append(source)
        arch = b.architecture()
        for target in spec.targets:
            if spec.exclude_self and p is not None and p.data == target:
                continue  # a source is not transferred to its own pretraining data
            data = target_data(target, per_class)
            b.check_input(data)
            for name in (common[target]["val_data"], common[target]["test_data"]):
                if name is not None:
                    b.check_input(target_data(name, None))
            fp = data.fingerprint
            if arch not in archs[target]:  # the baseline arm of this architecture, first:
                archs[target][arch] = model  # a pair can be judged as soon as it finishes
                tasks += _baseline_tasks(spec, common[target], b, fp, model)
            scoring = spec.scoring()
            tasks.append(Task(
                RunConfig(kind="scores", data=fp, model=b.identity(), seed=0,
                          layer=spec.layer or b.default_layer(), scoring=scoring),
                {"kind": "scores", "target": target, "source": source},
                {"kind": "scores", "target": target, "per_class": per_class,
                 "split_seed": common[target]["split_seed"], "layer": spec.layer,
                 "model": model, **scoring},
                f"scores {source} -> {target}"))
            for strategy in spec.strategies:
                for fraction in spec.fractions:
                    tasks += _train_tasks(spec, common[target], b, arch, fp, "transfer",
                                          source, model, strategy, fraction)
    if headless:
        note(f"{', '.join(head_metrics)}: not scored for {', '.join(headless)} (no classifier "
             "head, so no source probabilities; [[pretrain]] sources keep their backbone "
             "only); NaN in their scores")
    return tasks


def _baseline_tasks(spec: StudySpec, common: dict, b, fp: str, model: str) -> list[Task]:
    """The baseline arm (and with ``check_budget`` the arm at twice the budget) of one
    architecture on one target, every fraction."""
    tasks = []
    for fraction in spec.fractions:
        tasks += _train_tasks(spec, common, b, b.architecture(), fp, spec.baseline, None, model,
                              spec.baseline, fraction)
        if spec.check_budget:
            tasks += _train_tasks(spec, common, b, b.architecture(), fp,
                                  f"{spec.baseline} x2 budget", None, model, spec.baseline,
                                  fraction, train=doubled_budget(spec.train))
    return tasks


def _protocol(spec: StudySpec, target: str) -> dict:
    """How ``target`` is split and tested, as ``tscope finetune`` would with the spec's
    options: its validation / test set names and fingerprints, and the folds
    (:func:`~transferscope.finetune.run.resolve_folds` on the loaded target's size)."""
    val, test = spec.val_data.get(target), spec.test_data.get(target)
    data = target_data(target, spec.budgets.per_class)
    folds = resolve_folds(spec.splits, len(data), test is not None)
    return {"target": target, "per_class": spec.budgets.per_class, "split_seed": 0,
            "target_size": len(data), "target_classes": len(np.unique(np.asarray(data.labels))),
            "val_data": val, "test_data": test, "folds": folds,
            "split": default_split(val is not None, test is not None, folds),
            "fingerprints": heldout_fingerprints(target_data(val, None) if val else None,
                                                 target_data(test, None) if test else None)}


def _train_tasks(spec, common, b, arch, fp, arm, source, model, strategy, fraction,
                 train: TrainConfig | None = None):
    """One arm's tasks: per seed ``s`` (and per fold), the run ``finetune`` would plan for
    it (training seed ``train.seed + s``; with folds, split seed ``split_seed + s``)."""
    train = train or spec.train
    options = spec.strategy_options.get(strategy, {})
    folds, target = common["folds"], common["target"]
    out = []
    for s in range(spec.seeds):
        seed = spec.train.seed + s
        rep_seed = common["split_seed"] + s if folds else common["split_seed"]
        for f in range(folds) if folds else [0]:
            config = training_run(b, fp, strategy, options, train, seed=seed,
                                  fraction=fraction, layer=spec.layer, split_seed=rep_seed,
                                  split=common["split"], folds=folds, fold=f,
                                  **common["fingerprints"])
            tags = {"kind": "train", "target": target, "source": source, "arm": arm,
                    "strategy": strategy, "fraction": fraction, "arch": arch,
                    "target_size": common["target_size"],  # what the folds follow
                    "target_classes": common["target_classes"]}
            payload = {"kind": "train", "target": target, "per_class": common["per_class"],
                       "val_data": common["val_data"], "test_data": common["test_data"],
                       "model": model, "run": config.to_dict()}
            where = f" fold {f + 1}/{folds}" if folds else ""
            out.append(Task(config, tags, payload,
                            f"{arm} {source or 'scratch'} -> {target} f={fraction} "
                            f"seed {seed}{where}"))
    return out


def drive(store: RunStore, study: str, tasks: list[Task], ex, label: str | None = None,
          fn=execute) -> dict:
    """Run the tasks not finished yet and write each result as it arrives; a task whose run
    finished before (here or elsewhere, e.g. by ``tscope finetune``) is reused and made a
    member of the study.

    Progress (:mod:`transferscope.progress`, unit ``label``, default ``study <name>``): one
    line per run as its result arrives (runs done of total, failures, elapsed time, ETA, the
    run and its wall time), whatever process or Ray worker ran it; a run done in this process
    (``jobs=1``) shows its own progress (epochs, extraction) nested inside."""
    todo = []
    for t in tasks:
        run = store.find(t.config)
        if run is None or run["state"] != "finished":
            todo.append(t)
        else:
            store.link(t.config, study, t.tags)
    failed = []
    with unit(label or f"study {study}", len(todo), "run") as bar:
        if len(todo) < len(tasks):
            bar.line(f"{len(tasks) - len(todo)} of {len(tasks)} runs already finished "
                     "(reused)")
        payloads = [dict(t.payload, label=t.label) for t in todo]
        for j, result, error in ex.run(fn, payloads):
            t = todo[j]
            store.refresh_lock(f"study {study!r}")
            handle = store.start(t.config, study=study, tags=t.tags)
            if handle is None:  # finished meanwhile by another driver
                what = "finished meanwhile by another driver"
            elif error is not None:
                store.fail(handle, f"{type(error).__name__}: {error}")
                failed.append((t.label, f"{type(error).__name__}: {error}"))
                what = f"FAILED: {type(error).__name__}: {error}"
            else:
                for row in result.get("epochs", []):
                    store.log_epoch(handle, row["epoch"], row)
                store.finish(handle, result["metrics"], timings=result.get("timings"),
                             artifacts=result.get("artifacts"))
                wall = (result.get("timings") or {}).get("wall_s")
                what = "finished" + ("" if wall is None else f" in {duration(wall)}")
            bar.update(silent=True)
            bar.line(f"{bar.count()} done, {len(failed)} failed, {duration(bar.elapsed)} "
                     f"elapsed, ETA {duration(bar.eta)}: {t.label} {what}")
    return {"planned": len(tasks), "ran": len(todo), "reused": len(tasks) - len(todo),
            "failed": failed}


def run_study(spec: StudySpec, *, executor: str = "local", jobs: int = 1,
              address: str | None = None, progress: bool | None = None, cpus: float = 1,
              gpus: float = 0) -> dict:
    """Run a study: pretraining first, then every score and training run of its grid.

    Parameters
    ----------
    spec : StudySpec
        The study.
    executor : str
        ``local`` (a process pool of ``jobs``) or ``ray``.
    jobs : int
        Parallel runs.
    address : str, optional
        Ray cluster address.
    progress : bool, optional
        Progress of the runs (:mod:`transferscope.progress`: a bar on a terminal, a line per
        run elsewhere); ``None`` follows :func:`transferscope.progress.configure`, ``False``
        / ``True`` turn it off / on for this call.
    cpus, gpus : float
        Ray resources per run.

    Returns
    -------
    dict
        Per phase (``pretrain``, ``main``): ``planned``, ``ran``, ``reused`` and ``failed``
        (label, error) pairs.
    """
    store = open_store(spec.db)
    with override(progress), store.lock(f"study {spec.name!r}"):  # one driver per study
        return _run_locked(spec, store, executor, jobs, address, cpus, gpus)


def _run_locked(spec, store, executor, jobs, address, cpus, gpus) -> dict:
    # the only driver: whatever a killed driver left "running" is failed, to be redone
    store.mark_stale(older_than_s=0, study=spec.name)
    ex = make_executor(executor, jobs=jobs, address=address, cpus=cpus, gpus=gpus)
    summary = {}
    pre = pretrain_tasks(spec)
    if pre:
        summary["pretrain"] = drive(store, spec.name, pre, ex, f"study {spec.name} pretrain")
        if summary["pretrain"]["failed"]:
            raise InputError(f"Expected every pretraining to finish, got failures: "
                             f"{summary['pretrain']['failed'][:2]}")
    sources = resolve_sources(spec, store)
    summary["main"] = drive(store, spec.name, main_tasks(spec, sources), ex)
    return summary


def study_status(spec: StudySpec) -> dict:
    """Counts of planned, finished, failed, running and pending runs, per kind."""
    store = open_store(spec.db)
    pre = pretrain_tasks(spec)
    counts = {"pretrain": _count(store, pre)}
    sources = resolve_sources(spec, store)
    if sources is None:
        counts["main"] = "waiting for pretraining"
        return counts
    tasks = main_tasks(spec, sources)
    for kind in ("scores", "train"):
        counts[kind] = _count(store, [t for t in tasks if t.tags["kind"] == kind])
    return counts


def _count(store, tasks) -> dict:
    c = {"planned": len(tasks), "finished": 0, "failed": 0, "running": 0, "pending": 0}
    for t in tasks:
        run = store.find(t.config)
        c["pending" if run is None else run["state"]] += 1
    return c
