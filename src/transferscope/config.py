"""The one run identity: :class:`RunConfig`, and the training settings :class:`TrainConfig`.

Every run the project records (a fine-tuning arm of ``tscope finetune``, of ``tscope layers
--verify``, of a study; a study's pretraining and scoring tasks) is described by one frozen
:class:`RunConfig`: what data (content fingerprint and split), which model (weights identity,
or architecture for a from-scratch run), the fully resolved strategy config (defaults
included, so a changed default is a different run), the training settings, the data fraction,
the layer / cut / head width, and the seed. The store key is derived from it and nothing else
(:meth:`RunConfig.key`), so ``tscope finetune`` and ``tscope study`` reuse each other's runs.
Names for people (study, target, source, arm) travel beside it as the run's tags and the
package version is recorded beside it; neither is keyed.

This module imports nothing heavy (no torch), so the store and evaluations can read runs
without loading models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from dataclasses import dataclass, field

from transferscope.errors import InputError

KINDS = ("train", "pretrain", "scores")
DEFAULT_SPLIT = (0.6, 0.2, 0.2)
AUGMENTS = ("auto", "none", "image", "series")  # see transferscope.finetune.augment
DEFAULT_SEEDS = 3  # runs per arm: finetune, layers --verify, studies


@dataclass
class TrainConfig:
    """Training settings shared by every arm (AdamW, warm-up + cosine, early stopping).

    Attributes
    ----------
    epochs : int
        Maximum epochs.
    batch_size : int
        Samples per optimiser step.
    weight_decay : float
        AdamW weight decay.
    warmup_epochs : float
        Linear warm-up length, in epochs.
    clip_norm : float
        Gradient-norm clipping.
    patience : int
        Epochs without validation improvement before stopping.
    seed : int
        Seed of the first run (seed ``s`` of several trains under ``seed + s``).
    device : str or None
        Torch device (default: CUDA when available); not part of a run's identity.
    amp : bool
        Mixed precision allowed (``False``: fp32 whatever ``precision`` says; kept for configs
        written before ``precision``).
    precision : str
        ``"auto"`` (bf16 on a CUDA device with bf16, fp16 on an older GPU, fp32 on the CPU),
        ``"fp32"``, ``"bf16"`` (CUDA or CPU autocast) or ``"fp16"`` (CUDA autocast with a
        gradient scaler); see :mod:`transferscope.precision`. Part of a run's identity unless
        ``"auto"`` (so the keys of runs recorded before it existed stay the same).
    num_workers : int
        ``DataLoader`` processes that read and prepare batches when the split is streamed (0:
        this process); not part of a run's identity (it does not change the result).
    min_steps : int
        The budget's floor in optimiser steps, the same rule for every arm: a run trains for
        at least ``max(epochs, ceil(min_steps / steps_per_epoch))`` epochs' worth of budget
        and early stopping cannot end it before ``min_steps`` steps (a 120-sample training
        part at batch 32 is 4 steps an epoch: 20 epochs would be 80 steps). 0: epochs only.
    lr_grid : tuple of float
        Learning-rate multipliers tried per run, each arm on its own learning rates (every
        ``lr`` and ``*_lr`` option of its strategy times the multiplier); the run keeps the
        one with the best validation accuracy (ties: lower validation loss, then the
        multiplier closest to 1) and records it. The default spans two decades on a log
        scale (Bengio 2012, "Practical recommendations for gradient-based training"): the
        strategies' rates suit large pretrained networks, a small network from scratch often
        wants 10x more. ``(1.0,)``: no search.
    augment : str
        Data augmentation of training batches, both arms alike (never of validation or test
        data): ``"image"`` (random crop with zero padding + horizontal flip), ``"series"``
        (jitter + scaling), ``"none"``, or ``"auto"`` (image for 4-D floating inputs, series
        for 3-D, none otherwise); see :mod:`transferscope.finetune.augment`. Part of a run's
        identity.
    """

    epochs: int = 20
    batch_size: int = 32
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    clip_norm: float = 1.0
    patience: int = 5
    seed: int = 0
    device: str | None = None
    amp: bool = True
    precision: str = "auto"
    num_workers: int = 0
    min_steps: int = 500
    lr_grid: tuple = (0.1, 1.0, 10.0)
    augment: str = "auto"

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise InputError(f"Expected epochs, batch_size, patience >= 1, got {self}")
        from transferscope.data.stream import check_workers
        from transferscope.precision import check_precision

        check_precision(self.precision)
        if isinstance(self.min_steps, bool) or not isinstance(self.min_steps, int) \
                or self.min_steps < 0:
            raise InputError(f"Expected min_steps a whole number >= 0, got {self.min_steps!r};"
                             " e.g. --min-steps 500 (0: the epochs alone set the budget)")
        grid = tuple(self.lr_grid) if isinstance(self.lr_grid, (list, tuple)) else None
        if not grid or not all(isinstance(m, (int, float)) and not isinstance(m, bool)
                               and 0 < m < float("inf") for m in grid) \
                or len(set(grid)) < len(grid):
            raise InputError(f"Expected lr_grid distinct multipliers > 0, got "
                             f"{self.lr_grid!r}; e.g. --lr-grid 0.1,1,10 (1: no search)")
        self.lr_grid = tuple(float(m) for m in grid)
        check_workers(self.num_workers)
        if self.augment not in AUGMENTS:
            raise InputError(f"Expected augment among {', '.join(AUGMENTS)}, got "
                             f"{self.augment!r}; e.g. --augment none")

    def identity(self) -> dict:
        """The fields that shape the result (all but ``device``, ``seed`` and
        ``num_workers``; ``precision`` only when it is not ``"auto"``)."""
        d = dataclasses.asdict(self)
        d.pop("device")
        d.pop("seed")
        d.pop("num_workers")
        if d["precision"] == "auto":
            d.pop("precision")
        return d


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run's result.

    Attributes
    ----------
    kind : str
        ``"train"`` (a fine-tuning arm), ``"pretrain"`` (a study's source, trained from
        scratch) or ``"scores"`` (a study's transferability scores of one source).
    data : str
        Content fingerprint of the dataset (:attr:`transferscope.data.Dataset.fingerprint`).
    model : str
        The model's identity (weights and preprocessing); for a run that re-initialises the
        backbone, its architecture (weights do not matter).
    seed : int
        The run's seed.
    strategy : str
        Registered strategy name (empty for scores).
    strategy_config : dict
        Every field of the strategy's config, defaults filled in.
    train : dict
        :meth:`TrainConfig.identity`.
    split : tuple of float
        Fractions of the stratified split of ``data`` into the parts no other dataset gives,
        in the order train, validation, test (:func:`transferscope.finetune.run.make_split`):
        ``(0.6, 0.2, 0.2)``; with a validation or test set, two parts; with cross-validation,
        the held-in folds into train and validation.
    split_seed : int
        Seed of that split (and of the folds).
    val_data, test_data : str
        Fingerprints of a separate validation / test dataset (``--val-data``,
        ``--test-data``), used as they are; ``""``: a part of ``data``.
    folds : int
        ``K >= 2``: stratified K-fold cross-validation of ``data`` (under ``split_seed``), this
        run testing on fold ``fold``; 0: no folds.
    fold : int
        Which fold this run tests on.
    fraction : float
        Fraction of the training part used (learning curves).
    layer : str or None
        The layer the head sits on (resolved: never ``None`` for a training run).
    cut : bool
        Whether the backbone is truncated after ``layer``.
    head_width : int
        Hidden units of the head (0: linear).
    scoring : dict
        For scores: ``metrics``, ``subsamples`` and ``width``.
    """

    kind: str
    data: str
    model: str
    seed: int = 0
    strategy: str = ""
    strategy_config: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    split: tuple = DEFAULT_SPLIT
    split_seed: int = 0
    val_data: str = ""
    test_data: str = ""
    folds: int = 0
    fold: int = 0
    fraction: float = 1.0
    layer: str | None = None
    cut: bool = False
    head_width: int = 0
    scoring: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"Expected a run kind in {KINDS}, got {self.kind!r}")
        object.__setattr__(self, "split", tuple(float(f) for f in self.split))
        object.__setattr__(self, "fraction", float(self.fraction))
        # canonical JSON values: tuples become lists, so a round trip is the identity
        for name in ("strategy_config", "train", "scoring"):
            object.__setattr__(self, name, json.loads(json.dumps(getattr(self, name),
                                                                 sort_keys=True)))

    def to_dict(self) -> dict:
        """A JSON-able dict; :meth:`from_dict` rebuilds the same config."""
        d = dataclasses.asdict(self)
        d["split"] = list(self.split)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Rebuild from :meth:`to_dict`; keys from a newer version are warned about and
        dropped (as PEFT does with configs), so old code can still read new stores."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            warnings.warn(f"RunConfig: ignoring unknown keys {unknown} (written by a newer "
                          "transferscope?)", stacklevel=2)
        return cls(**{k: v for k, v in d.items() if k in known})

    def key(self) -> str:
        """The store key: SHA-256 (32 hex) of the canonical JSON of :meth:`to_dict`."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def replace(self, **changes) -> RunConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def training_run(backend, data_fingerprint: str, strategy: str, strategy_options: dict | None,
                 train: TrainConfig, *, seed: int, fraction: float = 1.0,
                 layer: str | None = None, cut: bool = False, head_width: int = 0,
                 split_seed: int = 0, split=DEFAULT_SPLIT, val_data: str = "",
                 test_data: str = "", folds: int = 0, fold: int = 0) -> RunConfig:
    """The :class:`RunConfig` of one fine-tuning arm; the one place that builds it.

    Parameters
    ----------
    backend : FinetunableBackend
        The model (its identity, or its architecture when the strategy re-initialises it).
    data_fingerprint : str
        The dataset's fingerprint.
    strategy : str
        A registered strategy.
    strategy_options : dict or None
        Options as given; resolved here to every field of the strategy config.
    train : TrainConfig
        Training settings (``seed`` is taken from ``seed``).
    seed : int
        The run's seed.
    fraction, layer, cut, head_width, split_seed, split, val_data, test_data, folds, fold
        As in :class:`RunConfig`; ``layer=None`` resolves to the backend's default layer.

    Returns
    -------
    RunConfig
    """
    from transferscope.finetune.strategies import make_strategy, resolved_options

    reinit = make_strategy(strategy, **(strategy_options or {})).reinitialise
    return RunConfig(kind="train", data=data_fingerprint,
                     model=backend.architecture() if reinit else backend.identity(),
                     seed=int(seed), strategy=strategy,
                     strategy_config=resolved_options(strategy, strategy_options),
                     train=train.identity(), split=split, split_seed=split_seed,
                     val_data=val_data, test_data=test_data, folds=int(folds),
                     fold=int(fold), fraction=fraction,
                     layer=layer or backend.default_layer(), cut=bool(cut),
                     head_width=int(head_width))
