"""Transfer strategies: config dataclasses in a registry, validated at construction.

A strategy decides which parameters train and at what learning rate (``param_groups``), may
add a regulariser to the loss (``penalty``) and may act at the start of each epoch
(``on_epoch_start``). Adding one is one dataclass plus ``@strategy("name")``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from transferscope.errors import InputError
from transferscope.metrics._registry import check_options, suggest

_STRATEGIES: dict[str, type] = {}


def strategy(name: str):
    def decorate(cls):
        cls.name = name
        _STRATEGIES[name] = cls
        return cls

    return decorate


def list_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def make_strategy(name: str, **options):
    if name not in _STRATEGIES:
        raise InputError(f"Unknown strategy {name!r}{suggest(name, _STRATEGIES)} "
                         f"(strategies: {', '.join(list_strategies())})")
    cls = _STRATEGIES[name]
    check_options(f"strategy {name!r}", options,
                  {f.name: f.default for f in dataclasses.fields(cls)})
    return cls(**options)


def _set_trainable(module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


@dataclass
class Strategy:
    lr: float = 1e-3  # learning rate of the new head
    backbone_lr: float = 1e-4  # learning rate of trainable backbone parameters

    def __post_init__(self):
        for f in ("lr", "backbone_lr"):
            if getattr(self, f) <= 0:
                raise InputError(f"Expected {f} > 0 for strategy {self.name!r}, got "
                                 f"{getattr(self, f)}")

    def param_groups(self, model) -> list[dict]:
        _set_trainable(model.backbone, True)
        return [{"params": list(model.head.parameters()), "lr": self.lr},
                {"params": model.backbone_parameters(), "lr": self.backbone_lr}]

    def penalty(self, model) -> torch.Tensor | None:
        return None

    def on_epoch_start(self, epoch: int, model) -> None:
        return None

    @property
    def reinitialise(self) -> bool:
        return False

    def stages(self, epochs: int) -> list[tuple[Strategy, int]]:
        """(strategy, epochs) phases; one phase unless the strategy is staged (LP-FT)."""
        return [(self, epochs)]


@strategy("linear_probe")
@dataclass
class LinearProbe(Strategy):
    """Frozen backbone (eval mode, so batch-norm statistics stay too); only the head trains."""

    def param_groups(self, model):
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
        names = [n for n, _ in model.backbone_blocks()]
        unknown = [b for b in self.blocks if b not in names]
        if unknown:
            raise InputError(f"Expected blocks among {names}, got {unknown}"
                             f"{suggest(unknown[0], names)}")
        return list(self.blocks) if self.blocks else names[: self.k]

    def param_groups(self, model):
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
        s = torch.linalg.svdvals(model.last_features.float())
        return self.eta * (s[-self.k :] ** 2).sum()


@strategy("scratch")
@dataclass
class Scratch(Strategy):
    """The same architecture, randomly initialised, every parameter at ``backbone_lr``."""

    backbone_lr: float = 1e-3

    @property
    def reinitialise(self) -> bool:
        return True
