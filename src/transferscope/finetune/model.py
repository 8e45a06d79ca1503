"""A backbone (any torch-module backend, cut at one layer) plus a new head."""

from __future__ import annotations

import copy

import torch
from torch import nn

from transferscope.backends.torch_module import TorchModuleBackend, pool


class TransferModel(nn.Module):
    """``backbone`` run up to ``layer`` (captured by a forward hook, pooled), then ``head``.

    The backbone module is a deep copy: fine-tuning never changes the backend's weights, and
    ``pretrained_state`` keeps the starting point (for L2-SP and for the reports).
    """

    def __init__(self, backend: TorchModuleBackend, n_outputs: int, *, layer: str | None = None,
                 head_width: int = 0):
        super().__init__()
        self.backend = backend
        self.layer = layer or backend.default_layer()
        backend.check_layers([self.layer])
        self.backbone = copy.deepcopy(backend.module)
        self.pretrained_state = {k: v.detach().clone()
                                 for k, v in self.backbone.state_dict().items()}
        self._captured = None
        if self.layer != "output":
            dict(self.backbone.named_modules())[self.layer].register_forward_hook(
                lambda _m, _i, out: setattr(self, "_captured", out))
        self.n_features = None
        self.head_width = head_width
        self.n_outputs = n_outputs
        self.head = None  # built lazily: the feature width is known after one forward pass

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone(x)
        return pool(out if self.layer == "output" else self._captured)

    def build_head(self, example: torch.Tensor) -> None:
        with torch.no_grad():
            self.n_features = self.features(example[:2]).shape[1]
        if self.head_width:
            self.head = nn.Sequential(nn.Linear(self.n_features, self.head_width), nn.ReLU(),
                                      nn.Linear(self.head_width, self.n_outputs))
        else:
            self.head = nn.Linear(self.n_features, self.n_outputs)
        self.head.to(example.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last_features = self.features(x)  # for feature regularisers such as BSS
        return self.head(self.last_features)

    def backbone_blocks(self) -> list[tuple[str, nn.Module]]:
        """Blocks in forward order (what freezing and learning-rate decay act on): the
        backbone's children, with Sequential/ModuleList children (stages) expanded one level;
        blocks without parameters are skipped."""
        blocks = []
        for name, child in self.backbone.named_children():
            if isinstance(child, (nn.Sequential, nn.ModuleList)):
                blocks += [(f"{name}.{n}", c) for n, c in child.named_children()]
            else:
                blocks.append((name, child))
        if self.layer != "output":  # blocks after the cut do not shape the features
            last = next((i for i, (n, _) in enumerate(blocks)
                         if self.layer == n or self.layer.startswith(n + ".")), len(blocks) - 1)
            blocks = blocks[: last + 1]
        return [(n, b) for n, b in blocks if next(b.parameters(), None) is not None]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters that shape the features: those of the blocks up to the cut, and any the
        backbone owns directly (parameters after the cut get no gradient and are left out)."""
        params = list(self.backbone.parameters(recurse=False))
        for _, block in self.backbone_blocks():
            params += list(block.parameters())
        return list({id(p): p for p in params}.values())
