"""Transfer vs scratch on one dataset: splits, both arms over seeds, the store, the verdict."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from transferscope.backends import FinetunableBackend, create_backend
from transferscope.backends.base import require_finetunable
from transferscope.backends.torch_module import resolve_device
from transferscope.config import (
    DEFAULT_SEEDS,
    DEFAULT_SPLIT,
    RunConfig,
    TrainConfig,
    training_run,
)
from transferscope.data import Dataset, stratified_split
from transferscope.data.splits import subsample_indices
from transferscope.errors import InputError
from transferscope.finetune.model import TransferModel
from transferscope.finetune.saving import save_model
from transferscope.finetune.strategies import make_strategy, resolve_strategy
from transferscope.finetune.trainer import fit, predict
from transferscope.precision import resolve_precision
from transferscope.progress import unit
from transferscope.store import RunStore, open_store
from transferscope.verdict import (
    VERDICT_RULE,
    best_time,
    mean_ci,
    negative_transfer_verdict,
    paired_gain,
    summarise_curves,
    time_to_target,
)


@dataclass
class FinetuneResult:
    """What :func:`finetune` found.

    Attributes
    ----------
    arms : list of dict
        Per arm (transfer first): ``arm``, ``strategy``, ``test_acc`` with its t interval
        ``ci_lo``/``ci_hi`` over seeds, ``seeds``, ``n_train``, ``params``,
        ``trainable_params``, ``train_s``, ``best_s``, ``time_to_target_s``.
    gain : tuple of float
        ``(gain, low, high)``: transfer minus baseline test accuracy, paired bootstrap.
    verdict : str
        POSITIVE, NEGATIVE or INCONCLUSIVE (see ``rule``).
    rule : str
        The verdict rule, stated.
    histories : dict
        ``(arm, seed index) -> History`` of the runs trained now (reused runs have none).
    target_acc : float
        The validation accuracy the time-to-target refers to.
    time_saved_s : float
        The baseline's time to target minus transfer's.
    """

    arms: list[dict]
    gain: tuple[float, float, float]
    verdict: str
    rule: str
    histories: dict
    target_acc: float = float("nan")
    time_saved_s: float = float("nan")

    def to_frame(self, level: str = "arm"):
        """The result as a DataFrame.

        Parameters
        ----------
        level : {"arm", "epoch"}
            ``"arm"``: one row per arm (transfer first), the :attr:`arms` fields plus the
            comparison's ``gain``, ``gain_lo``, ``gain_hi``, ``verdict``, ``target_acc`` and
            ``time_saved_s`` (the same on every row). ``"epoch"``: one row per (arm, seed,
            epoch) of the runs trained by this call (:attr:`histories`; runs reused from the
            store have no history here: read them with ``store.to_frame(epochs=True)``),
            with ``arm``, ``seed`` (the seed index) and the :meth:`History.to_frame` columns.

        Returns
        -------
        pandas.DataFrame of shape (n_arms, n_columns) or (n_epochs, n_columns)
        """
        from transferscope.frames import frame

        if level == "arm":
            g, lo, hi = self.gain
            return frame([dict(a, gain=g, gain_lo=lo, gain_hi=hi, verdict=self.verdict,
                               target_acc=self.target_acc, time_saved_s=self.time_saved_s)
                          for a in self.arms], ["arm", "strategy", "test_acc"],
                         rule=self.rule)
        if level == "epoch":
            rows = [{"arm": arm, "seed": seed, **row}
                    for (arm, seed), hist in self.histories.items()
                    for row in hist.to_frame().to_dict("records")]
            return frame(rows, ["arm", "seed", "epoch"])
        raise InputError(f"Expected level 'arm' or 'epoch', got {level!r}; e.g. "
                         "result.to_frame('epoch') for the learning curves")


def _tensors(backend, data: Dataset, idx) -> tuple:
    sub = data.subset(idx)
    _, codes = np.unique(data.labels, return_inverse=True)
    x = torch.cat([backend.prepare(sub.inputs[i : i + 256], sub) for i in range(0, len(sub), 256)])
    return x, torch.as_tensor(codes.reshape(-1)[idx])


def finetunable_backend(model, data: Dataset) -> FinetunableBackend:
    """The backend for ``model`` (a name or a backend), checked to train on ``data``."""
    backend = require_finetunable(create_backend(model) if isinstance(model, str) else model)
    backend.check_input(data)
    return backend


#: Prepared splits up to this size (bytes, estimated from one prepared sample) are held in
#: memory as tensors (prepared once, reused every epoch and run); larger ones are streamed.
IN_MEMORY_LIMIT = 1 << 30


@dataclass
class Split:
    """The stratified 60/20/20 train/validation/test split, model-ready.

    Attributes
    ----------
    train, val, test : tuple of (Tensor (n, ...), Tensor (n,)), or Examples
        Inputs prepared by the backend and class codes, held in memory; or, when streamed,
        :class:`~transferscope.data.stream.Examples` that prepare each batch as it is read
        (through a ``DataLoader``; the trainer reads both alike).
    classes : ndarray
        The sorted label values (class code ``i`` is ``classes[i]``).
    idx : tuple of ndarray
        ``(train, val, test)`` indices into the dataset.
    """

    train: tuple
    val: tuple
    test: tuple
    classes: np.ndarray
    idx: tuple


def make_split(backend, data: Dataset, split_seed: int = 0,
               train_fraction: float = 1.0, split=DEFAULT_SPLIT, *, stream: bool | None = None,
               num_workers: int = 0) -> Split:
    """The seeded stratified 60/20/20 split of ``data`` for ``backend``; with
    ``train_fraction`` < 1 only that fraction of each class's training part (validation and
    test stay the same).

    Parameters
    ----------
    backend : FinetunableBackend
        Whose ``prepare`` makes the inputs model-ready.
    data : Dataset
        N labelled samples (in memory, memmapped or lazily decoded).
    split_seed : int
        Seed of the split.
    train_fraction : float
        Fraction of each class's training part kept.
    split : tuple of float
        Train / validation / test fractions.
    stream : bool, optional
        ``True``: the parts are :class:`~transferscope.data.stream.Examples`, prepared batch
        by batch whenever they are read (memory bounded by the batch size and workers);
        ``False``: every sample is prepared once into in-memory tensors. Default: in memory
        when the prepared split takes at most :data:`IN_MEMORY_LIMIT` bytes (estimated from
        one prepared sample), else streamed. Both train the same model.
    num_workers : int
        ``DataLoader`` processes of a streamed split.

    Returns
    -------
    Split
    """
    data.require_classes("fine-tuning (a stratified train/validation/test split)")
    classes, counts = np.unique(data.labels, return_counts=True)
    if counts.min() < len(split):
        raise InputError(
            f"Expected at least {len(split)} samples per class for a train/validation/test "
            f"split, got {counts.min()} in class {classes[counts.argmin()]!r}; drop that class "
            "or add samples")
    train_idx, val_idx, test_idx = stratified_split(data.labels, split, seed=split_seed)
    if train_fraction != 1.0:
        train_idx = train_idx[subsample_indices(data.labels[train_idx],
                                                fraction=train_fraction, seed=split_seed)]
    parts = (train_idx, val_idx, test_idx)
    n_used = sum(len(i) for i in parts)
    if stream is None:
        one = backend.prepare([data.inputs[int(train_idx[0])]], data)
        stream = one.element_size() * one.numel() * n_used > IN_MEMORY_LIMIT
    if stream:
        from transferscope.data.stream import Examples

        _, codes = np.unique(data.labels, return_inverse=True)
        codes = codes.reshape(-1)
        tr, va, te = (Examples(data, i, codes[i], backend.prepare, num_workers) for i in parts)
    else:
        tr, va, te = (_tensors(backend, data, i) for i in parts)
    return Split(tr, va, te, np.unique(data.labels), parts)


def train_on_split(backend, split: Split, strategy: str, options: dict, config: TrainConfig, *,
                   layer: str | None = None, head_width: int = 0, cut: bool = False,
                   on_epoch=None):
    """One run: a fresh model (backbone at ``layer`` + new head) trained with ``strategy`` on
    the split's training part, selected on its validation part.

    Returns
    -------
    tuple of (TransferModel, History)
    """
    net = TransferModel(backend, len(split.classes), layer=layer, head_width=head_width,
                        cut=cut)
    hist = fit(net, make_strategy(strategy, **options), split.train, split.val, config,
               on_epoch=on_epoch)
    return net, hist


def epoch_line(row: dict, epochs: int, strategy: str | None = None) -> str:
    """One epoch of a run as a line: ``epoch 3/10 train_loss=0.4120 train_acc=0.8333
    val_loss=0.5012 val_acc=0.7500 seconds=1.9`` (epochs counted from 1; ``row`` numbers them
    from 0, as :class:`~transferscope.finetune.trainer.History` does; ``seconds`` since the
    run started), with ``stage=...`` when the stage is not the ``strategy`` itself (LP-FT's
    linear_probe and full stages)."""
    text = (f"epoch {row['epoch'] + 1}/{epochs} train_loss={row['train_loss']:.4f} "
            f"train_acc={row['train_acc']:.4f} val_loss={row['val_loss']:.4f} "
            f"val_acc={row['val_acc']:.4f} seconds={row['seconds']:.1f}")
    stage = row.get("stage")
    return text + (f" stage={stage}" if stage not in (None, strategy) else "")


def run_label(config: RunConfig, arm: str | None = None) -> str:
    """How progress names a run: ``transfer lp_ft seed 0``, ``scratch seed 1``."""
    arm = arm or config.strategy
    return " ".join(dict.fromkeys([arm, config.strategy])) + f" seed {config.seed}"


def train_run(backend, split: Split, config: RunConfig, *, device: str | None = None,
              on_epoch=None, label: str | None = None):
    """Train the run ``config`` describes (strategy, its resolved options, training settings,
    seed, layer, cut, head width) on ``split``: what every arm, study worker and pretraining
    task calls.

    Its progress (:mod:`transferscope.progress`) is one unit of epochs named ``label``
    (default :func:`run_label`) with one line per epoch (:func:`epoch_line`: train and
    validation loss and accuracy, seconds since the start), and the batches of each epoch
    inside it.

    Returns
    -------
    tuple of (TransferModel, History)
    """
    train = TrainConfig(**config.train, seed=config.seed, device=device)
    with unit(label or run_label(config), train.epochs, "epoch") as bar:
        def report(row):
            bar.update(silent=True)  # the epoch line says it
            bar.line(epoch_line(row, train.epochs, config.strategy))
            if on_epoch is not None:
                on_epoch(row)

        return train_on_split(backend, split, config.strategy, config.strategy_config,
                              train, layer=config.layer, head_width=config.head_width,
                              cut=config.cut, on_epoch=report)


def run_metrics(net, hist, correct) -> dict:
    """What the run store keeps of one finished run (everything a verdict, a learning curve or
    a time-to-target needs later, without the model)."""
    return {"test_acc": float(correct.mean()), "test_correct": correct.tolist(),
            "best_epoch": hist.best_epoch, "val_acc": hist.best_val_acc, "gap": hist.gap,
            "best_s": hist.best_s, "val_curve": hist.val_curve,
            "params": net.n_parameters(), "trainable_params": hist.trainable_params}


def correct_on(net, test_xy) -> np.ndarray:
    """1 where the model's prediction on a test sample is right, else 0 (shape (n_test,)).

    ``test_xy``: (x, y) tensors or :class:`~transferscope.data.stream.Examples`."""
    if hasattr(test_xy, "loader"):  # streamed
        return (predict(net, test_xy).argmax(1) == test_xy.y).numpy().astype(int)
    return (predict(net, test_xy[0]).argmax(1) == test_xy[1]).numpy().astype(int)


@dataclass
class ArmRun:
    """One seed of one arm, trained now or reused from the store.

    Attributes
    ----------
    config : RunConfig
    metrics : dict
        :func:`run_metrics`.
    wall_s : float
        Wall time of the run (when it was trained).
    net, history : TransferModel, History or None
        The model and history when trained now; ``None`` when reused.
    """

    config: RunConfig
    metrics: dict
    wall_s: float
    net: object = None
    history: object = None


def run_or_reuse(store: RunStore, backend, split: Split, config: RunConfig, *,
                 device: str | None = None, tags: dict | None = None) -> ArmRun:
    """Train the run ``config`` on ``split``, or reuse it when ``store`` has it finished.

    The one way a fine-tuning arm runs: epochs are logged as they end, an interrupted or
    failing run is marked failed (and restarted by the next call), a finished run is
    recorded with its test correctness.
    """
    with store.run(config, tags=tags) as handle:
        if handle is None:
            done = store.find(config)
            return ArmRun(config, done["metrics"], (done["timings"] or {}).get("wall_s",
                                                                               float("nan")))
        net, hist = train_run(backend, split, config, device=device,
                              on_epoch=lambda row: store.log_epoch(handle, row["epoch"], row),
                              label=run_label(config, (tags or {}).get("arm")))
        metrics = run_metrics(net, hist, correct_on(net, split.test))
        store.finish(handle, metrics, timings={"wall_s": hist.wall_s})
        return ArmRun(config, metrics, hist.wall_s, net, hist)


def check_seeds(seeds) -> None:
    """Refuse a number of seeds that is not a whole number >= 1 (one-line error)."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise InputError(f"Expected seeds >= 1, got {seeds!r}; e.g. --seeds 3")


def resolve_cut(layer: str | None, cut) -> tuple[str | None, bool]:
    """``cut`` may name the layer (``cut="blocks.4"``: truncate there) or be a bool."""
    if isinstance(cut, str):
        if layer not in (None, cut):
            raise InputError(f"Expected one layer, got layer={layer!r} and cut={cut!r}; "
                             "cut=LAYER (--cut) already sets the layer")
        return cut, True
    return layer, bool(cut)


def finetune(data: Dataset, model, strategy: str | None = None, *,
             baseline: str = "scratch", seeds: int = DEFAULT_SEEDS,
             config: TrainConfig | None = None, strategy_options=None, baseline_options=None,
             layer: str | None = None,
             cut: bool | str = False, freeze: int | None = None, head_width: int = 0,
             split_seed: int = 0, store: RunStore | None = None, margin: float = 0.0,
             save_dir=None, train_fraction: float = 1.0,
             target_acc: float | None = None) -> FinetuneResult:
    """Fine-tune ``model`` on ``data`` against a from-scratch twin, over seeds, with a verdict.

    Both arms train on the same stratified 60/20/20 split, select their epoch on validation
    only and are compared on test.

    Parameters
    ----------
    data : Dataset
        N labelled samples.
    model : str or FinetunableBackend
        A model name (see :mod:`transferscope.names`) or a built backend.
    strategy : str, optional
        A registered strategy (default ``lp_ft``; ``freeze`` when ``freeze`` is set).
    baseline : str
        The baseline arm's strategy (default ``scratch``: same architecture, re-initialised).
    seeds : int
        Runs per arm (seed ``s`` trains under ``config.seed + s``).
    config : TrainConfig, optional
        Training settings of both arms.
    strategy_options, baseline_options : dict, optional
        Options of each arm's strategy.
    layer : str, optional
        The layer the head sits on (default: the model's penultimate layer).
    cut : bool or str
        Truncate the backbone after ``layer`` (a str names the layer and cuts there).
    freeze : int, optional
        Freeze the first ``freeze`` blocks (the ``freeze`` strategy).
    head_width : int
        Hidden units of the head (0: linear); both arms alike.
    split_seed : int
        Seed of the split.
    store : RunStore, optional
        Where runs are recorded and reused (default: in memory, nothing kept).
    margin : float
        The smallest gain the verdict counts.
    save_dir : path, optional
        Save the transfer seed with the best validation accuracy there (safetensors, config
        with its :class:`RunConfig`, a model card with the verdict).
    train_fraction : float
        Fraction of the training part used by both arms (learning curves).
    target_acc : float, optional
        Validation accuracy for the time-to-target (default: the lowest best validation
        accuracy of all runs, a level every run reached).

    Returns
    -------
    FinetuneResult
        Training time: ``train_s`` is the mean wall time of a run (patience included),
        ``best_s`` the time until its selected epoch ended, ``time_to_target_s`` the median
        over seeds of the time until validation accuracy first reached ``target_acc`` (``inf``
        when most seeds never did); ``time_saved_s`` is the baseline's minus transfer's.
    """
    check_seeds(seeds)
    if save_dir is not None and Path(save_dir).exists() and not Path(save_dir).is_dir():
        raise InputError(f"Expected a folder to save the model in, got the file {save_dir}; "
                         "pass a new or existing folder to --save")
    cfg = config or TrainConfig()
    resolve_precision(cfg.precision, resolve_device(cfg.device))  # refused before any work
    strategy, strategy_options = resolve_strategy(strategy, strategy_options, freeze)
    layer, cut = resolve_cut(layer, cut)
    store = store if store is not None else open_store(None)
    backend = finetunable_backend(model, data)
    split = make_split(backend, data, split_seed, train_fraction,
                       num_workers=cfg.num_workers)
    fingerprint = data.fingerprint  # hashed once, not per run
    arms = {"transfer": (strategy, strategy_options),
            baseline: (baseline, baseline_options or {})}
    runs: dict[str, list[ArmRun]] = {}
    with unit(f"finetune {backend.name} on {data.name}", len(arms) * seeds, "run") as bar:
        for arm, (name, options) in arms.items():
            runs[arm] = []
            for s in range(seeds):
                rc = training_run(backend, fingerprint, name, options, cfg, seed=cfg.seed + s,
                                  fraction=train_fraction, layer=layer, cut=cut,
                                  head_width=head_width, split_seed=split_seed)
                run = run_or_reuse(store, backend, split, rc, device=cfg.device, tags={
                    "arm": arm, "target": data.name, "source": backend.name})
                runs[arm].append(run)
                bar.update()
                if run.history is None:
                    bar.line(f"{run_label(rc, arm)}: reused, finished before in the store")
    rows = []
    for arm, (name, _) in arms.items():
        m = [r.metrics for r in runs[arm]]
        mean, lo, hi = mean_ci([x["test_acc"] for x in m], bounds=(0.0, 1.0))
        rows.append({"arm": arm, "strategy": name, "test_acc": mean, "ci_lo": lo, "ci_hi": hi,
                     "seeds": seeds, "n_train": len(split.idx[0]),
                     "params": m[-1]["params"], "trainable_params": m[-1]["trainable_params"],
                     "train_s": float(np.mean([r.wall_s for r in runs[arm]])),
                     "best_s": float(np.mean([best_time(x["val_curve"]) for x in m]))})
    curves = {arm: [[tuple(p) for p in r.metrics["val_curve"]] for r in rs]
              for arm, rs in runs.items()}
    if target_acc is None:  # the best validation accuracy that every run reached
        target_acc = min(max(a for _, a in c) for cs in curves.values() for c in cs)
    for row in rows:
        row["time_to_target_s"] = time_to_target(curves[row["arm"]], target_acc)
    correct = {arm: np.stack([np.asarray(r.metrics["test_correct"]) for r in rs])
               for arm, rs in runs.items()}
    gain = paired_gain(correct["transfer"], correct[baseline])
    result = FinetuneResult(
        arms=rows, gain=gain, verdict=negative_transfer_verdict(gain[1], gain[2], margin),
        rule=VERDICT_RULE.format(m=margin), target_acc=target_acc,
        histories={(arm, s): r.history for arm, rs in runs.items()
                   for s, r in enumerate(rs) if r.history is not None},
        time_saved_s=rows[1]["time_to_target_s"] - rows[0]["time_to_target_s"])
    if save_dir is not None:
        best = max(runs["transfer"], key=lambda r: r.metrics["val_acc"])  # first of ties
        net = best.net
        if net is None:  # reused from the store: retrain that seed (same seed, same model)
            net, _ = train_run(backend, split, best.config, device=cfg.device)
        path = save_model(net, save_dir, classes=split.classes, model_name=backend.name,
                          run=best.config,
                          verdict={"arms": rows, "gain": gain, "verdict": result.verdict,
                                   "rule": result.rule})
        store.set_artifacts(best.config, {"model_dir": str(path.resolve())})
    return result


def learning_curves(data: Dataset, model, strategy: str | None = None, *,
                    fractions=(0.05, 0.1, 0.25, 0.5, 1.0), **kw) -> dict:
    """Both arms at each fraction of the training split; break-even and data saved.

    Parameters
    ----------
    data, model, strategy
        As for :func:`finetune`.
    fractions : sequence of float
        Fractions of the training part, in (0, 1].
    **kw
        Passed to :func:`finetune` (seeds, config, store, ...).

    Returns
    -------
    dict
        :func:`transferscope.verdict.summarise_curves` of the per-fraction points.
    """
    fractions = sorted(float(f) for f in fractions)
    points = []
    results = []
    with unit(f"learning curves on {data.name}", len(fractions), "fraction") as bar:
        for f in fractions:
            results.append(finetune(data, model, strategy, train_fraction=f, **kw))
            bar.update(fraction=f)
    for f, res in zip(fractions, results, strict=True):
        t, s = res.arms
        points.append({"fraction": f, "n_train": t["n_train"], "transfer_acc": t["test_acc"],
                       "scratch_acc": s["test_acc"], "gain": res.gain[0],
                       "gain_lo": res.gain[1], "gain_hi": res.gain[2], "verdict": res.verdict,
                       "transfer_best_s": t["best_s"], "scratch_best_s": s["best_s"]})
    return summarise_curves(points)
