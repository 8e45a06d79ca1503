"""The training loop: AdamW with warm-up and cosine decay, gradient clipping, early stopping
and model selection on the validation split only, seeded, GPU and mixed precision (bf16 or fp16
autocast, :mod:`transferscope.precision`) when present. Splits are in-memory tensors or
:class:`~transferscope.data.stream.Examples` streamed through a ``DataLoader``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from transferscope.backends.torch_module import reinitialise, resolve_device
from transferscope.config import TrainConfig
from transferscope.data.stream import Examples
from transferscope.errors import InputError
from transferscope.finetune.augment import augmenter
from transferscope.finetune.model import TransferModel
from transferscope.finetune.strategies import Strategy
from transferscope.precision import autocast, grad_scaler, resolve_precision
from transferscope.progress import unit

__all__ = ["History", "TrainConfig", "budget_epochs", "evaluate", "fit", "predict", "train"]

#: the most memory the fixed features of a frozen backbone may take (train and validation
#: together, float32); above it, every epoch runs the backbone again
FEATURE_CACHE_BYTES = 1 << 30


@dataclass
class History:
    """What one training run did, epoch by epoch.

    Attributes
    ----------
    epochs : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``,
        ``seconds`` (since the start; cumulative across stages) and, for staged strategies,
        ``stage``.
    best_epoch : int
        The selected epoch (best validation accuracy).
    best_val_acc : float
        Its validation accuracy.
    stopped_early : bool
        Whether patience ran out.
    wall_s : float
        Wall time of the whole run.
    trainable_params : int
        Parameters the optimiser updated (the largest stage).
    steps : int
        Optimiser steps taken (all stages).
    budget_epochs : int
        The epoch budget after the step floor (:attr:`TrainConfig.min_steps`).
    lr_scale : float
        The learning-rate multiplier of this run (chosen on validation by
        :func:`transferscope.finetune.run.train_run` from ``TrainConfig.lr_grid``).
    lr_search : list of dict
        That search: per multiplier its best validation accuracy and loss, epoch, seconds.
    """
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_acc: float = float("nan")
    stopped_early: bool = False
    wall_s: float = 0.0
    trainable_params: int = 0
    steps: int = 0
    budget_epochs: int = 0
    lr_scale: float = 1.0
    lr_search: list = field(default_factory=list)

    @property
    def best_s(self) -> float:
        """Training seconds until the selected epoch ended (what producing the model took)."""
        return self.epochs[self.best_epoch]["seconds"]

    @property
    def val_curve(self) -> list[tuple[float, float]]:
        """(seconds since the start, validation accuracy) at the end of every epoch."""
        return [(e["seconds"], e["val_acc"]) for e in self.epochs]

    @property
    def gap(self) -> float:
        """Train minus validation accuracy at the selected epoch (the overfitting diagnostic)."""
        e = self.epochs[self.best_epoch]
        return e["train_acc"] - e["val_acc"]

    def to_frame(self):
        """The learning curve of this run as a DataFrame, one row per epoch.

        Returns
        -------
        pandas.DataFrame of shape (n_epochs, n_columns)
            The :attr:`epochs` fields (``epoch``, ``train_loss``, ``train_acc``,
            ``val_loss``, ``val_acc``, ``seconds``; ``stage`` for staged strategies) and
            ``selected`` (True on :attr:`best_epoch`).
        """
        from transferscope.frames import frame

        return frame([dict(e, selected=e["epoch"] == self.best_epoch) for e in self.epochs],
                     ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"])


def budget_epochs(config: TrainConfig, n_train: int) -> int:
    """The epoch budget of a run on ``n_train`` samples: ``config.epochs``, raised so that the
    run can take ``config.min_steps`` optimiser steps (see :func:`fit`)."""
    return max(config.epochs, math.ceil(config.min_steps / math.ceil(n_train / config.batch_size)))


def _batches(n, batch_size, rng):
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _count(xy) -> int:
    """Samples of a split given as :class:`Examples` or as (x, y) tensors."""
    return len(xy) if isinstance(xy, Examples) else len(xy[0])


def _labels(xy) -> torch.Tensor:
    return xy.y if isinstance(xy, Examples) else xy[1]


def _first(xy, n: int) -> torch.Tensor:
    """The first ``n`` prepared inputs."""
    return xy.head(n) if isinstance(xy, Examples) else xy[0][:n]


def _iterate(xy, order, pin_memory: bool = False):
    """``(x, y)`` batches of a split for each index batch of ``order``: indexed from in-memory
    tensors, or read and prepared through a ``DataLoader`` (:meth:`Examples.loader`)."""
    if isinstance(xy, Examples):
        yield from xy.loader(order, pin_memory=pin_memory)
        return
    x, y = xy
    for idx in order:
        yield x[idx], y[idx]


def predict(model, x, batch_size: int = 256, device=None, precision: str = "fp32") \
        -> torch.Tensor:
    """Logits of ``model`` in eval mode, batch by batch.

    Parameters
    ----------
    model : torch.nn.Module
        A trained model.
    x : torch.Tensor of shape (N, ...) or Examples
        Prepared inputs, or samples prepared as they are read
        (:class:`transferscope.data.stream.Examples`).
    batch_size : int
        Samples per forward pass.
    device : str or torch.device, optional
        Where to run (default: the model's device).
    precision : str
        A precision (:mod:`transferscope.precision`) for the forward passes.

    Returns
    -------
    torch.Tensor of shape (N, n_outputs)
        On the CPU, float32.
    """
    device = device or next(model.parameters()).device
    precision = resolve_precision(precision, device)
    model.eval()
    n = len(x)
    order = [np.arange(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]
    xy = x if isinstance(x, Examples) else (x, torch.zeros(n, dtype=torch.int64))
    outs = []
    with torch.inference_mode():
        for xb, _ in _iterate(xy, order, pin_memory=str(device).startswith("cuda")):
            with autocast(precision, device):
                outs.append(model(xb.to(device, non_blocking=True)).float().cpu())
    if not outs:
        return torch.zeros((0, 0))
    return torch.cat(outs)


def _frozen(model) -> bool:
    """Whether no backbone parameter trains (the backbone is then a fixed feature extractor)."""
    return not any(p.requires_grad for p in model.backbone.parameters())


def _fixed_features(model, strategy, augment, splits, batch_size, device, precision):
    """The backbone's features of each split, computed once, when training cannot change them:
    the whole backbone frozen (in eval mode), training batches not augmented, and a strategy
    that neither adds a loss term nor changes the model between epochs. ``None`` otherwise,
    or when they would take more than :data:`FEATURE_CACHE_BYTES`.

    Training the head on them takes the same batches in the same order, with the same random
    draws, as running the backbone at every step (the frozen backbone in eval mode draws
    none), so the model comes out the same (``tests/finetune/test_trainer.py``); for a linear
    probe on a large backbone it is most of the run's time saved.

    Returns
    -------
    list of torch.Tensor of shape (N_split, n_features), or None
        On ``device``, float32.
    """
    kind = type(strategy)
    if (augment is not None or not _frozen(model) or kind.penalty is not Strategy.penalty
            or kind.on_epoch_start is not Strategy.on_epoch_start):
        return None
    if sum(_count(xy) for xy in splits) * model.n_features * 4 > FEATURE_CACHE_BYTES:
        return None
    model.backbone.eval()
    out = []
    with torch.inference_mode():
        for xy in splits:
            n = _count(xy)
            order = [np.arange(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]
            feats = []
            for xb, _ in _iterate(xy, order, pin_memory=device.startswith("cuda")):
                with autocast(precision, device):
                    feats.append(model.features(xb.to(device, non_blocking=True)).float())
            out.append(torch.cat(feats))
    return out


def _evaluate(model, xy, batch_size, device, precision="fp32"):
    x = xy if isinstance(xy, Examples) else xy[0]
    out = predict(model, x, batch_size, device, precision)
    y = _labels(xy).cpu()
    loss = nn.functional.cross_entropy(out, y).item()
    return loss, (out.argmax(1) == y).float().mean().item()


def train(model: TransferModel, strategy, train_xy, val_xy, config: TrainConfig | None = None,
          *, on_epoch=None) -> History:
    """Fit ``model`` with ``strategy``; returns the history and leaves the model at its best
    validation epoch. Test data never enters this function. Early stopping (``patience``
    epochs without a better validation accuracy) cannot end it before ``config.min_steps``
    optimiser steps; :func:`fit` raises the epochs to that floor.

    ``train_xy`` and ``val_xy`` are (x, y) tensors (x (N, ...) prepared inputs, y (N,) int64
    class codes) or :class:`~transferscope.data.stream.Examples`, read batch by batch through a
    ``DataLoader``: the same seeded batches in the same order, so both give the same model.
    Forward passes run under the resolved ``config.precision``
    (:mod:`transferscope.precision`); fp16 scales the loss (``GradScaler``). Training batches
    (only they) are augmented as ``config.augment`` says (:mod:`transferscope.finetune.augment`).
    A backbone without a trainable parameter runs in eval mode; when training cannot change its
    features, they are computed once per split and the head trains on them (the same model,
    ``python bench/frozen_features.py``: x22 faster for a 60-step linear probe on MiniLM)."""
    cfg = config or TrainConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision if cfg.amp else "fp32", device)
    pin = device.startswith("cuda")
    n_train = _count(train_xy)
    model.to(device)
    if strategy.reinitialise:
        reinitialise(model.backbone, cfg.seed + 1)
    example = _first(train_xy, 2)
    if model.head is None:
        model.build_head(example.to(device))
    # training batches only (never validation or test), drawn from a generator of the run's seed
    augment = augmenter(cfg.augment, example, seed=cfg.seed)
    strategy.setup(model)
    model.to(device)  # adapters added by setup
    groups = [g for g in strategy.param_groups(model) if g["params"]]
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    n_trainable = sum(p.numel() for g in groups for p in g["params"])
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total, warm = cfg.epochs * steps_per_epoch, max(1, int(cfg.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, max(0, s - warm) / max(1, total - warm)))))
    scaler = grad_scaler(precision, device)
    hist, best_state, since_best = History(trainable_params=n_trainable), None, 0
    start = time.perf_counter()
    fixed = _fixed_features(model, strategy, augment, (train_xy, val_xy), cfg.batch_size,
                            device, precision)
    for epoch in range(cfg.epochs):
        strategy.on_epoch_start(epoch, model)
        model.train()
        for _, block in model.backbone_blocks():  # frozen blocks keep their statistics
            if not any(p.requires_grad for p in block.parameters()):
                block.eval()
        if _frozen(model):  # a fixed feature extractor, dropout and all
            model.backbone.eval()
        run_loss, run_correct = 0.0, 0
        order = _batches(n_train, cfg.batch_size, rng)
        batches_of = (_iterate(train_xy, order, pin) if fixed is None else
                      ((fixed[0][idx], _labels(train_xy)[idx]) for idx in order))
        # the batches of one epoch: an inner bar, cleared when the epoch ends
        with unit("train batches", len(order), "batch", transient=True) as batches:
            for xb, yb in batches_of:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                if augment is not None:
                    xb = augment(xb)
                with autocast(precision, device):
                    out = model(xb) if fixed is None else model.head(xb)
                    loss = nn.functional.cross_entropy(out.float(), yb)
                    extra = strategy.penalty(model)
                    total_loss = loss if extra is None else loss + extra
                opt.zero_grad(set_to_none=True)
                scaler.scale(total_loss).backward()
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.clip_norm)
                scaler.step(opt)
                scaler.update()
                sched.step()
                hist.steps += 1
                run_loss += loss.item() * len(yb)
                run_correct += (out.argmax(1) == yb).sum().item()
                batches.update()
        if fixed is None:
            val_loss, val_acc = _evaluate(model, val_xy, cfg.batch_size, device, precision)
        else:
            val_loss, val_acc = _evaluate(model.head, (fixed[1], _labels(val_xy)),
                                          cfg.batch_size, device, precision)
        row = {"epoch": epoch, "train_loss": run_loss / n_train,
               "train_acc": run_correct / n_train, "val_loss": val_loss, "val_acc": val_acc,
               "seconds": time.perf_counter() - start}
        hist.epochs.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if hist.best_epoch < 0 or val_acc > hist.best_val_acc:
            hist.best_epoch, hist.best_val_acc, since_best = epoch, val_acc, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
            if since_best >= cfg.patience and hist.steps >= cfg.min_steps:
                hist.stopped_early = True
                break
    model.load_state_dict(best_state)
    hist.wall_s = time.perf_counter() - start
    return hist


def fit(model: TransferModel, strategy, train_xy, val_xy, config: TrainConfig | None = None,
        *, on_epoch=None) -> History:
    """Train through every stage of ``strategy``; the best validation epoch over all stages is
    kept. Each stage gets its own optimiser and schedule and starts from the previous stage's
    selected weights (for LP-FT: the fine-tuning starts from the linear-probe head).

    The budget is ``max(config.epochs, ceil(config.min_steps / steps_per_epoch))`` epochs,
    shared out by :meth:`Strategy.stages`, and early stopping waits until ``min_steps`` steps
    of all stages together: the same rule for every arm, so on one split a scratch arm never
    gets a smaller budget than a transfer arm."""
    cfg = config or TrainConfig()
    merged = History()
    offset, wall = 0, 0.0
    budget = budget_epochs(cfg, _count(train_xy))
    merged.budget_epochs = budget
    for i, (stage, epochs) in enumerate(strategy.stages(budget)):
        # the floor counts the steps of every stage: what is left of it passes on
        stage_cfg = dataclasses.replace(cfg, epochs=epochs, seed=cfg.seed + i,
                                        min_steps=max(0, cfg.min_steps - merged.steps))
        if i > 0 and stage.reinitialise:
            raise InputError("Expected only the first stage to re-initialise the backbone")

        def log(row, offset=offset, wall=wall, stage=stage):  # numbered across stages
            merged.epochs.append(dict(row, epoch=row["epoch"] + offset,
                                      seconds=row["seconds"] + wall, stage=stage.name))
            if on_epoch is not None:
                on_epoch(merged.epochs[-1])

        h = train(model, stage, train_xy, val_xy, stage_cfg, on_epoch=log)
        if merged.best_epoch < 0 or h.best_val_acc > merged.best_val_acc:
            merged.best_epoch, merged.best_val_acc = h.best_epoch + offset, h.best_val_acc
            best_state = copy.deepcopy(model.state_dict())
        offset += len(h.epochs)
        wall += h.wall_s
        merged.steps += h.steps
        merged.stopped_early = h.stopped_early
        merged.trainable_params = max(merged.trainable_params, h.trainable_params)
    model.load_state_dict(best_state)
    for stage, _ in strategy.stages(cfg.epochs):
        stage.finish(model)
    merged.wall_s = wall
    return merged


def evaluate(model: TransferModel, xy, batch_size: int = 64, device=None) -> dict:
    """Cross-entropy loss and accuracy of ``model`` (in eval mode) on a labelled split.

    Parameters
    ----------
    model : TransferModel
        A trained model.
    xy : tuple of (torch.Tensor of shape (N, ...), torch.Tensor of shape (N,)) or Examples
        Prepared inputs and int64 class indices, or samples prepared as they are read.
    batch_size : int
        Samples per forward pass.
    device : str or torch.device, optional
        Where to run (default: the model's device).

    Returns
    -------
    dict
        ``{"loss": float, "acc": float}``.
    """
    device = device or next(model.parameters()).device
    loss, acc = _evaluate(model, xy, batch_size, device)
    return {"loss": loss, "acc": acc}
