"""A backbone (a fine-tunable backend's module, cut at one layer) plus a new head."""

from __future__ import annotations

import copy

import torch
from torch import nn

from transferscope.errors import InputError


class TransferModel(nn.Module):
    """``backbone`` run up to ``layer`` and pooled, then ``head``.

    With ``cut=True`` the backbone is truncated after ``layer`` (fewer parameters, a forward
    pass that stops there); otherwise the whole backbone runs and the layer is read by a hook.

    The backend supplies the differentiable feature function (``feature_fn``: hooks for torch
    modules, hidden states for transformers) and the block list (``blocks``). The backbone is a
    deep copy: fine-tuning never changes the backend's weights, and ``pretrained_state`` keeps
    the starting point (for L2-SP and for the reports).
    """

    def __init__(self, backend, n_outputs: int, *, layer: str | None = None,
                 head_width: int = 0, cut: bool = False):
        super().__init__()
        from transferscope.backends.base import require_finetunable

        require_finetunable(backend)
        if head_width < 0:
            raise InputError(f"Expected head_width >= 0 hidden units (0 = linear), got "
                             f"{head_width}")
        self.backend = backend
        self.layer = layer or backend.default_layer()
        backend.check_layers([self.layer])
        self.cut = cut
        self.backbone = copy.deepcopy(backend.module)
        if cut:  # a truncated model: the blocks after the layer are gone, not just unused
            self.backbone = backend.truncate(self.backbone, self.layer)
        self.pretrained_state = {k: v.detach().clone()
                                 for k, v in self.backbone.state_dict().items()}
        self._features = backend.feature_fn(self.backbone, self.layer, cut=cut)
        self.n_features = None
        self.head_width = head_width
        self.n_outputs = n_outputs
        self.head = None  # built lazily: the feature width is known after one forward pass

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable pooled backbone features at :attr:`layer`.

        Parameters
        ----------
        x : torch.Tensor of shape (B, ...)
            A batch as the backend's ``prepare`` makes it.

        Returns
        -------
        torch.Tensor of shape (B, n_features)
        """
        return self._features(x)

    def build_head(self, example: torch.Tensor) -> None:
        """Create the head once the feature width is known (from a forward pass of two samples).

        Parameters
        ----------
        example : torch.Tensor of shape (B, ...)
            A prepared batch (B >= 1); the head is put on its device.

        Raises
        ------
        InputError
            When the batch does not fit the model (the first forward pass fails: the message
            names the model, the batch shape, the error's first line and what to check).
        """
        from transferscope.backends.torch_module import forward_error

        batch = example[:2]
        try:
            with torch.no_grad():
                feats = self.features(batch)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - the first forward pass of the user's model
            raise forward_error(self.backend.name, batch, exc,
                                _kind(self.backend, batch),
                                getattr(self.backend, "preprocessing", None)) from None
        if not isinstance(feats, torch.Tensor) or feats.dim() != 2 or len(feats) != len(batch):
            got = (f"shape {tuple(feats.shape)}" if isinstance(feats, torch.Tensor)
                   else type(feats).__name__)
            raise InputError(f"Expected (batch, features) from model {self.backend.name!r} at "
                             f"layer {self.layer!r}, got {got}; pick another layer (--layer)")
        self.n_features = feats.shape[1]
        self.head = make_head(self.n_features, self.head_width, self.n_outputs)
        self.head.to(example.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch; the pooled features are kept as ``last_features`` (for regularisers
        such as BSS).

        Parameters
        ----------
        x : torch.Tensor of shape (B, ...)
            A prepared batch.

        Returns
        -------
        torch.Tensor of shape (B, n_outputs)
        """
        self.last_features = self.features(x)  # for feature regularisers such as BSS
        return self.head(self.last_features)

    def backbone_blocks(self) -> list[tuple[str, nn.Module]]:
        """Blocks in forward order up to the cut (see the backend's ``blocks``)."""
        return self.backend.blocks(self.backbone, self.layer)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters that shape the features: those of the blocks up to the cut, and any the
        backbone owns directly (parameters after the cut get no gradient and are left out)."""
        params = list(self.backbone.parameters(recurse=False))
        for _, block in self.backbone_blocks():
            params += list(block.parameters())
        return list({id(p): p for p in params}.values())

    def n_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters of backbone and head (only those with ``requires_grad`` when
        ``trainable_only``).
        """
        return sum(p.numel() for p in self.parameters()
                   if p.requires_grad or not trainable_only)


def _kind(backend, x: torch.Tensor) -> str | None:
    """The data kind a prepared batch most likely is (picks the hint of a forward error)."""
    modalities = getattr(backend, "modalities", ())
    if len(modalities) == 1:
        return modalities[0]
    return {2: "array", 3: "series"}.get(x.dim())


def make_head(n_features: int, width: int, n_outputs: int) -> nn.Module:
    """Linear head (``width`` 0) or one hidden ReLU layer of ``width`` units."""
    if width:
        return nn.Sequential(nn.Linear(n_features, width), nn.ReLU(),
                             nn.Linear(width, n_outputs))
    return nn.Linear(n_features, n_outputs)
