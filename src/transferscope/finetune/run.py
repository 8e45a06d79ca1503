"""Transfer vs scratch on one dataset: splits, both arms over seeds, the store, the verdict."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
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
from transferscope.errors import InputError, note
from transferscope.finetune.model import TransferModel
from transferscope.finetune.saving import save_model
from transferscope.finetune.strategies import make_strategy, resolve_strategy
from transferscope.finetune.trainer import fit, predict
from transferscope.precision import resolve_precision
from transferscope.progress import unit
from transferscope.store import RunStore, open_store
from transferscope.verdict import (
    EQUIVALENCE,
    VERDICT_RULE,
    best_time,
    mean_ci,
    negative_transfer_verdict,
    paired_gain,
    stack_correctness,
    summarise_curves,
    time_to_target,
)


@dataclass
class FinetuneResult:
    """What :func:`finetune` found.

    Attributes
    ----------
    arms : list of dict
        Per arm (transfer, the baseline, and with the budget check the baseline at twice the
        budget): ``arm``, ``strategy``, ``test_acc`` with its t interval ``ci_lo``/``ci_hi``
        over seeds, ``seeds``, ``n_train``, ``params``, ``trainable_params``, ``steps`` (mean
        optimiser steps of a run), ``lr_scale`` (the learning-rate multiplier each run
        chose, comma-separated), ``train_s``, ``best_s``, ``time_to_target_s``.
    gain : Gain
        Transfer minus baseline test accuracy (:func:`transferscope.verdict.paired_gain`);
        unpacks as ``(gain, low, high)``.
    verdict : str
        POSITIVE, NEGATIVE or INCONCLUSIVE (see ``rule``).
    reading : str
        ``"effect"``, or for INCONCLUSIVE ``"no effect"`` / ``"too little evidence"``.
    power : str
        The verdict's power statement (:meth:`Gain.explain`).
    evaluation : str
        How the test samples were obtained (split, given test set or cross-validation).
    lr_grid : tuple of float
        The learning-rate multipliers every run searched.
    budget_check : dict or None
        With ``check_budget``: ``gain`` (Gain against the baseline at twice the budget),
        ``verdict``, ``holds`` (the same verdict) and ``baseline_acc``.
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
    reading: str = ""
    power: str = ""
    evaluation: str = ""
    lr_grid: tuple = (1.0,)
    budget_check: dict | None = field(default=None)

    def to_frame(self, level: str = "arm"):
        """The result as a DataFrame.

        Parameters
        ----------
        level : {"arm", "epoch"}
            ``"arm"``: one row per arm (transfer first), the :attr:`arms` fields plus the
            comparison's ``gain``, ``gain_lo``, ``gain_hi``, ``verdict``, ``reading``,
            ``mde`` (minimum detectable effect), ``target_acc`` and ``time_saved_s`` (the same
            on every row); ``attrs``: ``rule``, ``power``, ``evaluation``. ``"epoch"``: one
            row per (arm, seed, epoch) of the runs trained by this call (:attr:`histories`;
            runs reused from the store have no history here: read them with
            ``store.to_frame(epochs=True)``), with ``arm``, ``seed`` (the run index) and the
            :meth:`History.to_frame` columns.

        Returns
        -------
        pandas.DataFrame of shape (n_arms, n_columns) or (n_epochs, n_columns)
        """
        from transferscope.frames import frame

        if level == "arm":
            g, lo, hi = self.gain
            return frame([dict(a, gain=g, gain_lo=lo, gain_hi=hi, verdict=self.verdict,
                               reading=self.reading, mde=getattr(self.gain, "mde", np.nan),
                               target_acc=self.target_acc, time_saved_s=self.time_saved_s)
                          for a in self.arms], ["arm", "strategy", "test_acc"],
                         rule=self.rule, power=self.power, evaluation=self.evaluation)
        if level == "epoch":
            rows = [{"arm": arm, "seed": seed, **row}
                    for (arm, seed), hist in self.histories.items()
                    for row in hist.to_frame().to_dict("records")]
            return frame(rows, ["arm", "seed", "epoch"])
        raise InputError(f"Expected level 'arm' or 'epoch', got {level!r}; e.g. "
                         "result.to_frame('epoch') for the learning curves")


def _tensors(backend, data: Dataset, idx, codes=None) -> tuple:
    """Prepared inputs (Tensor (n, ...)) and class codes (Tensor (n,)) of ``data[idx]``;
    ``codes``: every sample's class code (default: its rank among ``data``'s labels)."""
    sub = data.subset(idx)
    if codes is None:
        _, codes = np.unique(data.labels, return_inverse=True)
    x = torch.cat([backend.prepare(sub.inputs[i : i + 256], sub) for i in range(0, len(sub), 256)])
    return x, torch.as_tensor(np.asarray(codes).reshape(-1)[idx])


def class_codes(labels, classes, what: str) -> np.ndarray:
    """Each label's position in ``classes`` (the sorted training classes), shape (N,).

    Raises
    ------
    InputError
        For a label that is not a training class (a model cannot predict it).
    """
    labels = np.asarray(labels)
    known = np.isin(labels, classes)
    if not known.all():
        bad = sorted({str(v) for v in labels[~known]})
        raise InputError(f"Expected the {what} labels among the {len(classes)} classes of "
                         f"--data, got {len(bad)} other(s) ({', '.join(bad[:5])}); pass a "
                         f"{what} set with the same classes")
    return np.searchsorted(classes, labels).astype(np.int64)


def finetunable_backend(model, data: Dataset) -> FinetunableBackend:
    """The backend for ``model`` (a name or a backend), checked to train on ``data``."""
    backend = require_finetunable(create_backend(model) if isinstance(model, str) else model)
    backend.check_input(data)
    return backend


#: Prepared splits up to this size (bytes, estimated from one prepared sample) are held in
#: memory as tensors (prepared once, reused every epoch and run); larger ones are streamed.
IN_MEMORY_LIMIT = 1 << 30


#: Without a test set, data with fewer samples than this is cross-validated by default
#: (:func:`resolve_folds`): its 20 % test part would hold fewer than 200 samples.
AUTO_FOLDS_BELOW = 1000
#: The folds of that default.
AUTO_FOLDS = 5


def resolve_folds(splits: int | None, n: int, has_test: bool) -> int:
    """The number of cross-validation folds (0: one split) for ``splits`` (``--splits``).

    ``None`` chooses by size: :data:`AUTO_FOLDS`-fold cross-validation when there is no test
    set and fewer than :data:`AUTO_FOLDS_BELOW` samples (a 20 % test part of fewer than 200
    samples makes an interval too wide to show anything but a huge effect), else one split.
    ``1``: one split; ``K >= 2``: K folds, each repetition (seed) with its own folds.
    """
    if splits is None:
        return AUTO_FOLDS if not has_test and n < AUTO_FOLDS_BELOW else 0
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise InputError(f"Expected splits a whole number >= 1, got {splits!r}; e.g. "
                         "--splits 5 (5-fold cross-validation) or --splits 1 (one split)")
    if splits >= 2 and has_test:
        raise InputError(f"Expected --splits 1 with a test set (--test-data is the test "
                         f"part), got --splits {splits}; drop one of them")
    return 0 if splits == 1 else splits


def default_split(has_val: bool, has_test: bool, folds: int = 0) -> tuple:
    """The fractions of ``data``'s parts (train, then validation and test unless given):
    ``(0.6, 0.2, 0.2)``; two parts ``(0.8, 0.2)``; with folds the held-in part into train and
    validation ``(0.8, 0.2)`` (``(1.0,)`` with a validation set)."""
    n_parts = 1 + (not has_val) + (not (has_test or folds))
    return {3: DEFAULT_SPLIT, 2: (0.8, 0.2), 1: (1.0,)}[n_parts]


@dataclass
class Split:
    """One train/validation/test split, model-ready.

    Attributes
    ----------
    train, val, test : tuple of (Tensor (n, ...), Tensor (n,)), or Examples
        Inputs prepared by the backend and class codes, held in memory; or, when streamed,
        :class:`~transferscope.data.stream.Examples` that prepare each batch as it is read
        (through a ``DataLoader``; the trainer reads both alike).
    classes : ndarray
        The sorted label values of ``data`` (class code ``i`` is ``classes[i]``).
    idx : tuple of ndarray
        ``(train, val, test)`` indices: train into ``data``, validation and test into their
        own dataset when given, else into ``data``.
    """

    train: tuple
    val: tuple
    test: tuple
    classes: np.ndarray
    idx: tuple


def make_split(backend, data: Dataset, split_seed: int = 0,
               train_fraction: float = 1.0, split=None, *, val_data: Dataset | None = None,
               test_data: Dataset | None = None, folds: int = 0, fold: int = 0,
               stream: bool | None = None, num_workers: int = 0) -> Split:
    """The seeded stratified split of ``data`` for ``backend``: train / validation / test,
    with a given validation or test set used as it is, or fold ``fold`` of stratified
    ``folds``-fold cross-validation as the test part; with ``train_fraction`` < 1 only that
    fraction of each class's training part (validation and test stay the same).

    Nothing of the test part reaches training or selection: the trainer sees train and
    validation only.

    Parameters
    ----------
    backend : FinetunableBackend
        Whose ``prepare`` makes the inputs model-ready.
    data : Dataset
        N labelled samples (in memory, memmapped or lazily decoded).
    split_seed : int
        Seed of the split (and of the folds).
    train_fraction : float
        Fraction of each class's training part kept.
    split : tuple of float, optional
        Fractions of ``data``'s parts (train, then validation and test unless given; with
        folds, of the held-in part); default :func:`default_split`.
    val_data, test_data : Dataset, optional
        Separate validation / test sets (the same classes as ``data``), used whole.
    folds, fold : int
        ``folds >= 2``: test on fold ``fold`` of
        :func:`~transferscope.data.splits.stratified_folds` (``split_seed``); the other folds
        are split by ``split``.
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
    from transferscope.data.splits import stratified_folds

    data.require_classes("fine-tuning (a stratified train/validation/test split)")
    for what, d in (("validation", val_data), ("test", test_data)):
        if d is not None:
            d.require_classes(f"a {what} set")
            backend.check_input(d)
            if d.kind != data.kind:
                raise InputError(f"Expected a {what} set of {data.kind} like --data, got "
                                 f"{d.kind}; pass the same kind of data")
            if d.kind in ("series", "array"):  # images are resized, texts tokenised
                want, got = np.shape(data.inputs[0]), np.shape(d.inputs[0])
                if want != got:
                    raise InputError(f"Expected the {what} samples shaped like --data's "
                                     f"{want}, got {got}; pass a {what} set of the same "
                                     "channels and length")
    split = tuple(split) if split is not None else default_split(
        val_data is not None, test_data is not None, folds)
    names = ["train"] + ["val"] * (val_data is None) + ["test"] * (test_data is None
                                                                   and not folds)
    if len(split) != len(names):
        example = default_split(val_data is not None, test_data is not None, folds)
        raise InputError(f"Expected {len(names)} split fractions ({', '.join(names)}), got "
                         f"{list(split)}; e.g. {list(example)}")
    classes = np.unique(data.labels)
    codes = class_codes(data.labels, classes, "training")
    pool = np.arange(len(data))
    part = {}
    if folds:
        counts = np.bincount(codes)
        if counts.min() < folds:
            raise InputError(
                f"Expected at least {folds} samples per class for {folds}-fold "
                f"cross-validation, got {counts.min()} in class "
                f"{classes[counts.argmin()]!r}; pass fewer --splits, drop that class or add "
                "samples")
        part["test"] = stratified_folds(data.labels, folds, seed=split_seed)[fold]
        pool = np.setdiff1d(pool, part["test"])
    per_class = np.bincount(codes[pool], minlength=len(classes))
    if per_class.min() < len(split):
        raise InputError(
            f"Expected at least {len(split)} samples per class for a {'/'.join(names)} "
            f"split, got {per_class.min()} in class {classes[per_class.argmin()]!r}; drop "
            "that class or add samples")
    for name, idx in zip(names, stratified_split(data.labels[pool], split, seed=split_seed),
                         strict=True):
        part[name] = pool[idx]
    if train_fraction != 1.0:
        part["train"] = part["train"][subsample_indices(data.labels[part["train"]],
                                                        fraction=train_fraction,
                                                        seed=split_seed)]
    val_src = val_data if val_data is not None else data
    test_src = test_data if test_data is not None else data
    if val_data is not None:
        part["val"] = np.arange(len(val_data))
    if test_data is not None:
        part["test"] = np.arange(len(test_data))
    sources = [(data, part["train"], codes),
               (val_src, part["val"], codes if val_data is None
                else class_codes(val_data.labels, classes, "validation")),
               (test_src, part["test"], codes if test_data is None
                else class_codes(test_data.labels, classes, "test"))]
    if stream is None:
        one = backend.prepare([data.inputs[int(part["train"][0])]], data)
        n_used = sum(len(i) for _, i, _ in sources)
        stream = one.element_size() * one.numel() * n_used > IN_MEMORY_LIMIT
    if stream:
        from transferscope.data.stream import Examples

        tr, va, te = (Examples(d, i, c[i], backend.prepare, num_workers)
                      for d, i, c in sources)
    else:
        tr, va, te = (_tensors(backend, d, i, c) for d, i, c in sources)
    return Split(tr, va, te, classes, (part["train"], part["val"], part["test"]))


def heldout_fingerprints(val_data: Dataset | None, test_data: Dataset | None) -> dict:
    """``{"val_data": fp, "test_data": fp}`` for :func:`~transferscope.config.training_run`
    (``""`` for a part taken from ``data``)."""
    return {"val_data": val_data.fingerprint if val_data is not None else "",
            "test_data": test_data.fingerprint if test_data is not None else ""}


def split_of(backend, data: Dataset, config: RunConfig, *, val_data: Dataset | None = None,
             test_data: Dataset | None = None, num_workers: int = 0) -> Split:
    """The split a run's :class:`RunConfig` names (what a study worker or a retrain
    rebuilds), checked against the validation / test sets' fingerprints."""
    for what, fp, d in (("validation", config.val_data, val_data),
                        ("test", config.test_data, test_data)):
        if bool(fp) != (d is not None) or (d is not None and d.fingerprint != fp):
            got = d.fingerprint if d is not None else "none"
            raise InputError(f"Expected the {what} set the run was planned with "
                             f"({fp or 'none'}), got {got}; pass the same --{what[:4]}-data")
    return make_split(backend, data, config.split_seed, config.fraction, config.split,
                      val_data=val_data, test_data=test_data, folds=config.folds,
                      fold=config.fold, num_workers=num_workers)


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


def scaled_options(options: dict, factor: float) -> dict:
    """A strategy's resolved options with every learning rate (``lr`` and ``*_lr``) times
    ``factor``."""
    return {k: (v * factor if (k == "lr" or k.endswith("_lr")) and isinstance(v, float)
                else v) for k, v in options.items()}


def train_run(backend, split: Split, config: RunConfig, *, device: str | None = None,
              on_epoch=None, label: str | None = None):
    """Train the run ``config`` describes (strategy, its resolved options, training settings,
    seed, layer, cut, head width) on ``split``: what every arm, study worker and pretraining
    task calls.

    Each multiplier ``m`` of the training settings' ``lr_grid`` trains a model with the
    strategy's learning rates times ``m`` (same seed); the one with the best validation
    accuracy is kept (ties: lower validation loss at its selected epoch, then the multiplier
    closest to 1). The test part is never read here. Its history carries ``lr_scale`` (the
    choice) and ``lr_search`` (per multiplier: ``lr_scale``, ``val_acc``, ``val_loss``,
    ``best_epoch``, ``wall_s``); its ``wall_s`` is the whole search's.

    Progress (:mod:`transferscope.progress`): per multiplier one unit of epochs named
    ``label`` (default :func:`run_label`, with ``lr xM`` when there is a grid) with one line
    per epoch (:func:`epoch_line`), and the batches of each epoch inside it. ``on_epoch``
    receives every epoch of every multiplier, numbered across them, with ``lr_scale``.

    Returns
    -------
    tuple of (TransferModel, History)
    """
    from transferscope.finetune.trainer import budget_epochs

    train = TrainConfig(**config.train, seed=config.seed, device=device)
    epochs = budget_epochs(train, len(split.idx[0]))
    grid = train.lr_grid
    best, search, counter, wall = None, [], [0], 0.0
    for m in grid:
        name = (label or run_label(config)) + (f" lr x{m:g}" if len(grid) > 1 else "")
        with unit(name, epochs, "epoch") as bar:
            def report(row, m=m, bar=bar):
                bar.update(silent=True)  # the epoch line says it
                bar.line(epoch_line(row, epochs, config.strategy))
                if on_epoch is not None:
                    on_epoch(dict(row, epoch=counter[0], lr_scale=m))
                counter[0] += 1

            net, hist = train_on_split(backend, split, config.strategy,
                                       scaled_options(config.strategy_config, m), train,
                                       layer=config.layer, head_width=config.head_width,
                                       cut=config.cut, on_epoch=report)
        wall += hist.wall_s
        val_loss = hist.epochs[hist.best_epoch]["val_loss"]
        search.append({"lr_scale": m, "val_acc": hist.best_val_acc, "val_loss": val_loss,
                       "best_epoch": hist.best_epoch, "wall_s": hist.wall_s})
        rank = (-hist.best_val_acc, val_loss, abs(np.log(m)))
        if best is None or rank < best[0]:
            best = (rank, net, hist, m)
    _, net, hist, m = best
    hist.lr_scale, hist.lr_search, hist.wall_s = m, search, wall
    return net, hist


def run_metrics(net, hist, correct, test_index=None) -> dict:
    """What the run store keeps of one finished run (everything a verdict, a learning curve or
    a time-to-target needs later, without the model): test correctness, the selected epoch
    and its validation accuracy and loss, the train-validation gap, time to the selected
    epoch, the validation curve, parameters, optimiser steps and epoch budget, and the
    learning-rate choice (``lr_scale``, ``lr_search``). ``test_index``: the positions of the
    test samples (``split.idx[2]``), which line runs of several folds up
    (:func:`transferscope.verdict.stack_correctness`)."""
    index = np.arange(len(correct)) if test_index is None else np.asarray(test_index)
    return {"test_acc": float(correct.mean()), "test_correct": correct.tolist(),
            "test_index": index.tolist(),
            "best_epoch": hist.best_epoch, "val_acc": hist.best_val_acc,
            "val_loss": hist.epochs[hist.best_epoch]["val_loss"], "gap": hist.gap,
            "best_s": hist.best_s, "val_curve": hist.val_curve,
            "params": net.n_parameters(), "trainable_params": hist.trainable_params,
            "steps": hist.steps, "budget_epochs": hist.budget_epochs,
            "lr_scale": getattr(hist, "lr_scale", 1.0),
            "lr_search": getattr(hist, "lr_search", [])}


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
        metrics = run_metrics(net, hist, correct_on(net, split.test), split.idx[2])
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


def doubled_budget(config: TrainConfig) -> TrainConfig:
    """The budget check's training settings: twice the epochs, step floor and patience."""
    return dataclasses.replace(config, epochs=2 * config.epochs,
                               min_steps=2 * config.min_steps, patience=2 * config.patience)


def grid_edges(chosen: dict, grid) -> list[str]:
    """Which arms chose a learning-rate multiplier at the edge of the grid in most runs.

    Parameters
    ----------
    chosen : dict of str to list of float
        ``{arm: [the multiplier each run chose]}``.
    grid : sequence of float
        The multipliers the runs chose from.

    Returns
    -------
    list of str
        One sentence per such arm: the best rate may lie beyond the grid, so that arm may be
        under-tuned and the comparison unfair; it suggests the grid shifted one step out.
        Empty for a grid of one value.
    """
    grid = sorted(grid)
    if len(grid) < 2:
        return []
    out = []
    for arm, picks in chosen.items():
        for edge, step, side in ((grid[-1], grid[-1] / grid[-2], "largest"),
                                 (grid[0], grid[0] / grid[1], "smallest")):
            n = sum(c == edge for c in picks)
            if n > len(picks) / 2:
                shifted = ",".join(f"{float(f'{m * step:.2g}'):g}" for m in grid)
                out.append(f"{arm}: {n} of {len(picks)} runs chose the {side} learning-rate "
                           f"multiplier (x{edge:g}); the best may lie beyond the grid, so this "
                           f"arm may be under-tuned: try --lr-grid {shifted}")
    return out


def edge_notes(runs: dict, grid) -> list[str]:
    """:func:`grid_edges` of ``{arm: [runs]}`` (each run's ``metrics["lr_scale"]``), each said
    as a note (:func:`transferscope.errors.note`)."""
    out = grid_edges({arm: [r.metrics.get("lr_scale", 1.0) for r in rs]
                      for arm, rs in runs.items()}, grid)
    for line in out:
        note(line)
    return out


def describe_evaluation(n_test: int, folds: int, seeds: int, has_val: bool,
                        has_test: bool) -> str:
    """How the test samples were obtained, one line (what a verdict's power refers to)."""
    if folds:
        how = (f"{folds}-fold cross-validation repeated {seeds} time(s) with new folds and "
               f"seeds: each of the {n_test} samples tested once per repetition")
    elif has_test:
        how = f"the given test set ({n_test} samples), the same for every seed"
    else:
        how = f"one stratified split, {n_test} test samples, the same for every seed"
    return how + ("; validation: the given set" if has_val else "")


def finetune(data: Dataset, model, strategy: str | None = None, *,
             baseline: str = "scratch", seeds: int = DEFAULT_SEEDS,
             config: TrainConfig | None = None, strategy_options=None, baseline_options=None,
             layer: str | None = None,
             cut: bool | str = False, freeze: int | None = None, head_width: int = 0,
             split_seed: int = 0, store: RunStore | None = None, margin: float = 0.0,
             save_dir=None, train_fraction: float = 1.0,
             target_acc: float | None = None, val_data: Dataset | None = None,
             test_data: Dataset | None = None, splits: int | None = None,
             check_budget: bool = False, equivalence: float = EQUIVALENCE) -> FinetuneResult:
    """Fine-tune ``model`` on ``data`` against a from-scratch twin, over seeds, with a verdict.

    Both arms train on the same splits under the same budget rule and learning-rate search,
    select their epoch and learning rate on validation only and are compared on test:

    - the test samples: ``test_data`` as given; else cross-validation (``splits``, by default
      5 folds below :data:`AUTO_FOLDS_BELOW` samples, :func:`resolve_folds`), each seed a
      repetition with its own folds, so every sample is tested once per seed; else one
      stratified 60/20/20 split;
    - the budget: ``config.epochs``, raised to at least ``config.min_steps`` optimiser steps,
      early stopping not before them (:func:`~transferscope.finetune.trainer.fit`);
    - the learning rate: each run tries ``config.lr_grid`` times its arm's own rates and keeps
      the best on validation (:func:`train_run`);
    - the verdict: :func:`transferscope.verdict.paired_gain` over seeds and test samples, with
      its power (the smallest gain it could detect) and, when INCONCLUSIVE, whether that is
      "no effect" or "too little evidence".

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
        Runs per arm (seed ``s`` trains under ``config.seed + s``; with cross-validation it
        also draws the folds under ``split_seed + s``).
    config : TrainConfig, optional
        Training settings of both arms (epochs, ``min_steps``, ``lr_grid``, ``augment``, ...).
    strategy_options, baseline_options : dict, optional
        Options of each arm's strategy (the grid multiplies their learning rates).
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
    val_data, test_data : Dataset, optional
        A separate validation / test set (same classes as ``data``), used as it is: the test
        set reaches neither training nor any selection.
    splits : int, optional
        ``K >= 2``: K-fold cross-validation; ``1``: one split; ``None``: by size
        (:func:`resolve_folds`).
    check_budget : bool
        Also train the baseline arm with twice the budget (:func:`doubled_budget`, the same
        learning-rate grid) and report whether the verdict holds with it.
    equivalence : float
        An INCONCLUSIVE verdict whose interval lies within +-``equivalence`` is "no effect".

    Returns
    -------
    FinetuneResult
        Training time: ``train_s`` is the mean wall time of a run (its learning-rate search
        and patience included), ``best_s`` the time until its selected epoch ended,
        ``time_to_target_s`` the median over runs of the time until validation accuracy
        first reached ``target_acc`` (``inf`` when most never did); ``time_saved_s`` is the
        baseline's minus transfer's.
    """
    check_seeds(seeds)
    if save_dir is not None and Path(save_dir).exists() and not Path(save_dir).is_dir():
        raise InputError(f"Expected a folder to save the model in, got the file {save_dir}; "
                         "pass a new or existing folder to --save")
    cfg = config or TrainConfig()
    resolve_precision(cfg.precision, resolve_device(cfg.device))  # refused before any work
    strategy, strategy_options = resolve_strategy(strategy, strategy_options, freeze)
    layer, cut = resolve_cut(layer, cut)
    folds = resolve_folds(splits, len(data), test_data is not None)
    store = store if store is not None else open_store(None)
    backend = finetunable_backend(model, data)
    fingerprint = data.fingerprint  # hashed once, not per run
    extra = heldout_fingerprints(val_data, test_data)
    arms = {"transfer": (strategy, strategy_options, cfg),
            baseline: (baseline, baseline_options or {}, cfg)}
    if check_budget:
        arms[f"{baseline} x2 budget"] = (baseline, baseline_options or {}, doubled_budget(cfg))
    runs: dict[str, list[list[ArmRun]]] = {arm: [[] for _ in range(seeds)] for arm in arms}
    test_idx: list[list[np.ndarray]] = [[] for _ in range(seeds)]
    n_train = []
    fold_ids = range(folds) if folds else [0]
    total = len(arms) * seeds * len(fold_ids)
    with unit(f"finetune {backend.name} on {data.name}", total, "run") as bar:
        for s in range(seeds):
            rep_seed = split_seed + s if folds else split_seed
            for f in fold_ids:
                split = make_split(backend, data, rep_seed, train_fraction,
                                   val_data=val_data, test_data=test_data, folds=folds,
                                   fold=f, num_workers=cfg.num_workers)
                test_idx[s].append(split.idx[2])
                n_train.append(len(split.idx[0]))
                for arm, (name, options, arm_cfg) in arms.items():
                    rc = training_run(backend, fingerprint, name, options, arm_cfg,
                                      seed=cfg.seed + s, fraction=train_fraction, layer=layer,
                                      cut=cut, head_width=head_width, split_seed=rep_seed,
                                      split=default_split(val_data is not None,
                                                          test_data is not None, folds),
                                      folds=folds, fold=f, **extra)
                    run = run_or_reuse(store, backend, split, rc, device=cfg.device, tags={
                        "arm": arm, "target": data.name, "source": backend.name})
                    runs[arm][s].append(run)
                    bar.update()
                    if run.history is None:
                        bar.line(f"{run_label(rc, arm)}: reused, finished before in the store")
                del split

    # per arm (seeds, n_test): every sample at its own column, assembled once
    correct = {arm: stack_correctness([[dict(r.metrics, test_index=idx.tolist())
                                        for idx, r in zip(test_idx[s], runs[arm][s],
                                                          strict=True)]
                                       for s in range(seeds)]) for arm in arms}
    n_test = correct["transfer"].shape[1]
    flat = {arm: [r for rs in runs[arm] for r in rs] for arm in arms}
    rows = []
    for arm, (name, _, _) in arms.items():
        m = [r.metrics for r in flat[arm]]
        per_seed = correct[arm].mean(axis=1)
        mean, lo, hi = mean_ci(per_seed, bounds=(0.0, 1.0))
        rows.append({"arm": arm, "strategy": name, "test_acc": mean, "ci_lo": lo, "ci_hi": hi,
                     "seeds": seeds, "n_train": int(np.mean(n_train)),
                     "params": m[-1]["params"], "trainable_params": m[-1]["trainable_params"],
                     "steps": float(np.mean([x.get("steps", np.nan) for x in m])),
                     "lr_scale": ",".join(f"{x.get('lr_scale', 1.0):g}" for x in m),
                     "train_s": float(np.mean([r.wall_s for r in flat[arm]])),
                     "best_s": float(np.mean([best_time(x["val_curve"]) for x in m]))})
    edge_notes(flat, cfg.lr_grid)
    curves = {arm: [[tuple(p) for p in r.metrics["val_curve"]] for r in rs]
              for arm, rs in flat.items()}
    if target_acc is None:  # the best validation accuracy that every run reached
        target_acc = min(max(a for _, a in c) for cs in curves.values() for c in cs)
    for row in rows:
        row["time_to_target_s"] = time_to_target(curves[row["arm"]], target_acc)
    gain = paired_gain(correct["transfer"], correct[baseline])
    verdict = negative_transfer_verdict(gain.low, gain.high, margin)
    budget = None
    if check_budget:
        doubled = paired_gain(correct["transfer"], correct[f"{baseline} x2 budget"])
        again = negative_transfer_verdict(doubled.low, doubled.high, margin)
        budget = {"gain": doubled, "verdict": again, "holds": again == verdict,
                  "baseline_acc": rows[2]["test_acc"]}
    result = FinetuneResult(
        arms=rows, gain=gain, verdict=verdict, rule=VERDICT_RULE.format(m=margin),
        target_acc=target_acc,
        histories={(arm, s): r.history for arm, rs in flat.items()
                   for s, r in enumerate(rs) if r.history is not None},
        time_saved_s=rows[1]["time_to_target_s"] - rows[0]["time_to_target_s"],
        reading=gain.reading(margin, equivalence), power=gain.explain(margin, equivalence),
        evaluation=describe_evaluation(n_test, folds, seeds, val_data is not None,
                                       test_data is not None),
        lr_grid=cfg.lr_grid, budget_check=budget)
    if save_dir is not None:
        best = max(flat["transfer"], key=lambda r: r.metrics["val_acc"])  # first of ties
        net = best.net
        if net is None:  # reused from the store: retrain that run (same seed, same model)
            net, _ = train_run(backend, split_of(backend, data, best.config, val_data=val_data,
                                                 test_data=test_data,
                                                 num_workers=cfg.num_workers),
                               best.config, device=cfg.device)
        path = save_model(net, save_dir, classes=np.unique(data.labels),
                          model_name=backend.name, run=best.config,
                          verdict={"arms": rows, "gain": tuple(gain), "verdict": verdict,
                                   "rule": result.rule, "power": result.power,
                                   "lr_scale": best.metrics.get("lr_scale", 1.0)})
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
        :func:`transferscope.verdict.summarise_curves` of the per-fraction points (each with
        the gain, its interval and verdict; with ``check_budget``, ``budget_verdict`` and
        ``budget_holds``).
    """
    fractions = sorted(float(f) for f in fractions)
    points = []
    results = []
    with unit(f"learning curves on {data.name}", len(fractions), "fraction") as bar:
        for f in fractions:
            results.append(finetune(data, model, strategy, train_fraction=f, **kw))
            bar.update(fraction=f)
    for f, res in zip(fractions, results, strict=True):
        t, s = res.arms[:2]  # (with the budget check, the doubled baseline is third)
        points.append({"fraction": f, "n_train": t["n_train"], "transfer_acc": t["test_acc"],
                       "scratch_acc": s["test_acc"], "gain": res.gain[0],
                       "gain_lo": res.gain[1], "gain_hi": res.gain[2], "verdict": res.verdict,
                       "transfer_best_s": t["best_s"], "scratch_best_s": s["best_s"]})
        if res.budget_check is not None:
            points[-1].update(budget_verdict=res.budget_check["verdict"],
                              budget_holds=res.budget_check["holds"])
    return summarise_curves(points)
