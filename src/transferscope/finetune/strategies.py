"""Transfer strategies: config dataclasses in a registry, validated at construction.

A strategy decides which parameters train and at what learning rate (``param_groups``), may
add a regulariser to the loss (``penalty``) and may act at the start of each epoch
(``on_epoch_start``). Adding one is one dataclass plus ``@strategy("name")``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from transferscope.errors import InputError, require
from transferscope.registry import Registry, suggest

STRATEGIES = Registry("strategy", "strategies")
strategy = STRATEGIES.register


def list_strategies() -> list[str]:
    """Names of the registered strategies, sorted."""
    return STRATEGIES.names()


def make_strategy(name: str, **options):
    """The strategy ``name`` configured with ``options`` (checked: did-you-mean).

    Parameters
    ----------
    name : str
        A registered strategy (:func:`list_strategies`).
    **options
        Fields of its config dataclass (e.g. ``lr``, ``probe_epochs``).

    Returns
    -------
    Strategy
        The validated config dataclass.
    """
    return STRATEGIES.build(name, **options)


def resolved_options(name: str, options: dict | None = None) -> dict:
    """Every field of strategy ``name``'s config, defaults filled in (JSON-able).

    This is what identifies the strategy in a run's identity: a changed default changes it.
    """
    cfg = make_strategy(name, **(options or {}))
    return {f.name: (list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v)
            for f in dataclasses.fields(cfg)}


def _set_trainable(module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


@dataclass
class Strategy:
    """Base config of a transfer strategy; by itself, full fine-tuning (every parameter trains).

    Subclasses are dataclasses registered with ``@strategy("name")`` (which sets ``name``); the
    trainer calls :meth:`stages`, then per stage :meth:`setup`, :meth:`param_groups`,
    :meth:`on_epoch_start` each epoch and :meth:`penalty` each step, and :meth:`finish` at the
    end. Blocks left without a trainable parameter are kept in eval mode by the trainer, and a
    backbone left without any is in eval mode as a whole: a fixed feature extractor, whose
    features the trainer computes once when nothing else can change them (no augmentation, and
    neither :meth:`penalty` nor :meth:`on_epoch_start` overridden).

    Parameters
    ----------
    lr : float
        Learning rate of the new head (> 0).
    backbone_lr : float
        Learning rate of the trainable backbone parameters (> 0).

    Raises
    ------
    InputError
        For a learning rate <= 0 (subclasses check their own fields too).
    """

    lr: float = 1e-3  # learning rate of the new head
    backbone_lr: float = 1e-4  # learning rate of trainable backbone parameters

    def __post_init__(self):
        for f in ("lr", "backbone_lr"):
            if getattr(self, f) <= 0:
                raise InputError(f"Expected {f} > 0 for strategy {self.name!r}, got "
                                 f"{getattr(self, f)}")

    def param_groups(self, model) -> list[dict]:
        """Set which backbone parameters train and return the optimiser's parameter groups.

        Parameters
        ----------
        model : TransferModel
            The model, with its head built.

        Returns
        -------
        list of dict
            AdamW parameter groups (``params``, ``lr``); here the head at :attr:`lr` and every
            backbone parameter up to the cut at :attr:`backbone_lr`. Empty groups are dropped by
            the trainer.
        """
        _set_trainable(model.backbone, True)
        return [{"params": list(model.head.parameters()), "lr": self.lr},
                {"params": model.backbone_parameters(), "lr": self.backbone_lr}]

    def penalty(self, model) -> torch.Tensor | None:
        """A regulariser added to the batch's cross-entropy loss, or ``None`` (here: none).

        Parameters
        ----------
        model : TransferModel
            The model, just after its forward pass on the batch (``model.last_features`` is set).

        Returns
        -------
        torch.Tensor or None
            A scalar tensor.
        """
        return None

    def setup(self, model) -> None:
        """Change the model before training (e.g. inject adapters); idempotent."""
        return None

    def finish(self, model) -> None:
        """Act on the selected model after training (e.g. merge adapters)."""
        return None

    def on_epoch_start(self, epoch: int, model) -> None:
        """Act on ``model`` before epoch ``epoch`` (0-based, within the stage); here nothing."""
        return None

    @property
    def reinitialise(self) -> bool:
        """Whether the backbone is randomly re-initialised before training (here ``False``)."""
        return False

    def stages(self, epochs: int) -> list[tuple[Strategy, int]]:
        """(strategy, epochs) phases; one phase unless the strategy is staged (LP-FT)."""
        return [(self, epochs)]


@strategy("linear_probe")
@dataclass
class LinearProbe(Strategy):
    """Frozen backbone (eval mode, so batch-norm statistics stay too); only the head trains,
    on the backbone's features computed once per split unless training batches are augmented."""

    def param_groups(self, model):
        """Freeze the whole backbone; only the head trains, at :attr:`lr` (see
        :meth:`Strategy.param_groups`).
        """
        _set_trainable(model.backbone, False)
        return [{"params": list(model.head.parameters()), "lr": self.lr}]


@strategy("full")
@dataclass
class FullFineTune(Strategy):
    """Every parameter trains (backbone at ``backbone_lr``)."""


@strategy("freeze")
@dataclass
class Freeze(Strategy):
    """The first ``k`` blocks (or the blocks named in ``blocks``) stay frozen."""

    k: int = 0
    blocks: tuple = ()

    def __post_init__(self):
        super().__post_init__()
        if self.k < 0:
            raise InputError(f"Expected k >= 0 frozen blocks, got {self.k}")

    def frozen(self, model) -> list[str]:
        """Names of the backbone blocks to freeze: those in :attr:`blocks`, else the first
        :attr:`k`.

        Parameters
        ----------
        model : TransferModel

        Returns
        -------
        list of str
            Block names as :meth:`TransferModel.backbone_blocks` gives them.

        Raises
        ------
        InputError
            For a name in :attr:`blocks` that is not a block of the model (did-you-mean).
        """
        names = [n for n, _ in model.backbone_blocks()]
        unknown = [b for b in self.blocks if b not in names]
        if unknown:
            raise InputError(f"Expected blocks among {names}, got {unknown}"
                             f"{suggest(unknown[0], names)}")
        return list(self.blocks) if self.blocks else names[: self.k]

    def param_groups(self, model):
        """The head at :attr:`lr` and the unfrozen backbone parameters at :attr:`backbone_lr`; the
        :meth:`frozen` blocks get no gradient (see :meth:`Strategy.param_groups`).
        """
        groups = super().param_groups(model)
        frozen = set(self.frozen(model))
        for name, block in model.backbone_blocks():
            if name in frozen:
                _set_trainable(block, False)
        groups[1]["params"] = [p for p in model.backbone_parameters() if p.requires_grad]
        return groups


@strategy("l2sp")
@dataclass
class L2SP(Strategy):
    """Full fine-tuning pulled toward the pretrained weights: alpha/2 ||w - w0||^2
    (Li, Grandvalet, Davoine, ICML 2018), plus beta/2 ||head||^2."""

    alpha: float = 0.01
    beta: float = 0.01

    def penalty(self, model):
        """``alpha/2 * ||w - w0||^2`` over the trainable backbone parameters up to the cut (``w0``:
        ``model.pretrained_state``) plus ``beta/2 * ||head||^2`` (see :meth:`Strategy.penalty`).

        Returns
        -------
        torch.Tensor
            A scalar.
        """
        start = model.pretrained_state
        used = {id(p) for p in model.backbone_parameters()}
        pull = sum(((p - start[n].to(p.device)) ** 2).sum()
                   for n, p in model.backbone.named_parameters()
                   if p.requires_grad and id(p) in used)
        head = sum((p ** 2).sum() for p in model.head.parameters())
        return 0.5 * self.alpha * pull + 0.5 * self.beta * head


@strategy("llrd")
@dataclass
class LayerwiseDecay(Strategy):
    """Layer-wise learning-rate decay: block i of B trains at backbone_lr * decay^(B - i)."""

    decay: float = 0.7

    def param_groups(self, model):
        """The head at :attr:`lr`, then one group per backbone block ``i`` of ``B`` at
        ``backbone_lr * decay ** (B - 1 - i)`` (the last block at ``backbone_lr``), and any other
        backbone parameters at ``backbone_lr`` (see :meth:`Strategy.param_groups`).
        """
        _set_trainable(model.backbone, True)
        blocks = model.backbone_blocks()
        groups = [{"params": list(model.head.parameters()), "lr": self.lr}]
        seen = set()
        for i, (_, block) in enumerate(blocks):
            params = [p for p in block.parameters() if id(p) not in seen]
            seen.update(id(p) for p in params)
            groups.append({"params": params,
                           "lr": self.backbone_lr * self.decay ** (len(blocks) - 1 - i)})
        rest = [p for p in model.backbone_parameters() if id(p) not in seen]
        if rest:
            groups.append({"params": rest, "lr": self.backbone_lr})
        return groups


@strategy("lp_ft")
@dataclass
class LPFT(Strategy):
    """Linear probe for ``probe_epochs``, then full fine-tuning starting from that head
    (Kumar et al., ICLR 2022): the backbone is not distorted by a random head's gradients."""

    probe_epochs: int = 5

    def stages(self, epochs):
        """A :class:`LinearProbe` stage of :attr:`probe_epochs`, then a :class:`FullFineTune` stage
        of the remaining epochs, both with this strategy's learning rates (see
        :meth:`Strategy.stages`).

        Raises
        ------
        InputError
            Unless ``0 < probe_epochs < epochs``.
        """
        if not 0 < self.probe_epochs < epochs:
            raise InputError(f"Expected 0 < probe_epochs < epochs ({epochs}), got "
                             f"{self.probe_epochs}")
        return [(LinearProbe(lr=self.lr, backbone_lr=self.backbone_lr), self.probe_epochs),
                (FullFineTune(lr=self.lr, backbone_lr=self.backbone_lr),
                 epochs - self.probe_epochs)]


@strategy("gradual_unfreeze")
@dataclass
class GradualUnfreeze(Strategy):
    """Head first, then one more block from the top every ``every`` epochs (Howard & Ruder,
    ULMFiT, ACL 2018). Frozen blocks get no gradient and keep their batch-norm statistics."""

    every: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.every < 1:
            raise InputError(f"Expected every >= 1 epoch, got {self.every}")

    def on_epoch_start(self, epoch, model):
        """Make the top ``epoch // every`` backbone blocks trainable and freeze the others (see
        :meth:`Strategy.on_epoch_start`).
        """
        blocks = model.backbone_blocks()
        n_open = min(len(blocks), epoch // self.every)
        for i, (_, block) in enumerate(blocks):
            _set_trainable(block, i >= len(blocks) - n_open)


@strategy("bss")
@dataclass
class BSS(Strategy):
    """Full fine-tuning with Batch Spectral Shrinkage (Chen et al., NeurIPS 2019): the penalty
    ``eta * sum of the k smallest squared singular values`` of each batch's feature matrix
    suppresses the untransferable spectral components."""

    eta: float = 1e-3
    k: int = 1

    def penalty(self, model):
        """``eta`` times the sum of the ``k`` smallest squared singular values of the batch's
        feature matrix ``model.last_features``, of shape (B, n_features) (see
        :meth:`Strategy.penalty`).

        Returns
        -------
        torch.Tensor
            A scalar.
        """
        s = torch.linalg.svdvals(model.last_features.float())
        return self.eta * (s[-self.k :] ** 2).sum()


@strategy("scratch")
@dataclass
class Scratch(Strategy):
    """The same architecture, randomly initialised, every parameter at ``backbone_lr``."""

    backbone_lr: float = 1e-3

    @property
    def reinitialise(self) -> bool:
        """``True``: the backbone is randomly re-initialised before training."""
        return True


@strategy("lora")
@dataclass
class LoRA(Strategy):
    """Low-rank adapters through ``peft`` (Hu et al., ICLR 2022): the pretrained weights stay
    frozen, ``W + (alpha / r) B A`` trains only A and B (at ``backbone_lr``) and the head.

    ``target_modules="auto"``: peft's defaults for the transformer's model type (query/value
    for BERT-like models), otherwise every Linear and (non-grouped) Conv layer up to the cut.
    With ``merge`` the adapters are folded into the weights after training, so the saved model
    has the base architecture and no inference overhead.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple | str = "auto"
    merge: bool = True
    backbone_lr: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        if self.r < 1:
            raise InputError(f"Expected LoRA rank r >= 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise InputError(f"Expected 0 <= dropout < 1, got {self.dropout}")

    def targets(self, model) -> list[str]:
        """Names of the modules that get adapters.

        Parameters
        ----------
        model : TransferModel

        Returns
        -------
        list of str
            :attr:`target_modules` when given; with ``"auto"``, peft's defaults for a transformer's
            model type, else every Linear, Conv1d and Conv2d layer (groups 1) in the backbone blocks
            up to the cut.

        Raises
        ------
        InputError
            When ``"auto"`` finds no such layer.
        """
        if self.target_modules != "auto":
            names = ([self.target_modules] if isinstance(self.target_modules, str)
                     else list(self.target_modules))
            return names
        model_type = getattr(getattr(model.backbone, "config", None), "model_type", None)
        if model_type is not None:
            from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

            if model_type in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
                return list(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])
        layers = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)
        names = []
        for block_name, block in model.backbone_blocks():
            names += [f"{block_name}.{n}" if n else block_name for n, m in block.named_modules()
                      if isinstance(m, layers) and getattr(m, "groups", 1) == 1]
        if not names:
            raise InputError(f"Expected Linear or Conv layers for LoRA in {model.backend.name!r}"
                             ", got none; pass target_modules=<names>")
        return names

    def setup(self, model):
        """Inject LoRA adapters into ``model.backbone`` (in place) unless they are already
        there (see :meth:`Strategy.setup`).

        Raises
        ------
        InputError
            When peft finds none of the target modules.
        OptionalDependencyError
            Without peft.
        """
        if any("lora_" in n for n, _ in model.backbone.named_parameters()):
            return  # adapters already in place (a later stage)
        peft = require("peft", "lora", "LoRA fine-tuning")
        targets = self.targets(model)
        config = peft.LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                                 target_modules=targets)
        try:
            peft.inject_adapter_in_model(config, model.backbone)
        except ValueError as exc:
            raise InputError(f"Expected LoRA target modules present in {model.backend.name!r}, "
                             f"got {targets} ({str(exc).splitlines()[0][:120]}); pass "
                             "target_modules=<names>") from None

    def param_groups(self, model):
        """Only the adapters (at :attr:`backbone_lr`) and the head (at :attr:`lr`) train; every
        pretrained weight is frozen (see :meth:`Strategy.param_groups`).
        """
        for n, p in model.backbone.named_parameters():
            p.requires_grad_("lora_" in n)
        adapters = [p for p in model.backbone_parameters() if p.requires_grad]
        return [{"params": list(model.head.parameters()), "lr": self.lr},
                {"params": adapters, "lr": self.backbone_lr}]

    def finish(self, model):
        """With :attr:`merge`, fold the adapters into the weights (:func:`merge_lora`)."""
        if self.merge:
            merge_lora(model.backbone)


def merge_lora(module: torch.nn.Module) -> int:
    """Fold every LoRA adapter in ``module`` into its base layer and put the base layer back;
    returns how many layers were merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, child in list(module.named_modules()):
        if isinstance(child, LoraLayer):
            child.merge(safe_merge=True)
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            base = child.get_base_layer()
            for p in base.parameters():
                p.requires_grad_(True)
            setattr(parent, attr, base)
            merged += 1
    return merged


def resolve_strategy(strategy: str | None, options: dict | None = None,
                     freeze: int | None = None) -> tuple[str, dict]:
    """The strategy and its options, with the ``freeze`` shorthand applied.

    Parameters
    ----------
    strategy : str or None
        A registered strategy; ``None`` means ``lp_ft`` (or ``freeze`` when ``freeze`` is set).
    options : dict, optional
        The strategy's options.
    freeze : int, optional
        Freeze the first ``freeze`` blocks: the ``freeze`` strategy with ``k=freeze``.

    Returns
    -------
    tuple of (str, dict)

    Raises
    ------
    InputError
        For ``freeze`` with another strategy.
    """
    options = dict(options or {})
    if freeze is not None:
        if strategy not in (None, "freeze"):
            raise InputError(f"Expected freeze=K (--freeze) with the freeze strategy, got "
                             f"strategy {strategy!r}; drop one of them")
        strategy, options["k"] = "freeze", freeze
    return strategy or "lp_ft", options
