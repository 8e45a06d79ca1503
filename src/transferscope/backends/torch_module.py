"""Backends around a torch ``nn.Module``: hooks on named blocks, batched inference, pooling."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from transferscope.backends.base import FinetunableBackend, Preprocessing, weights_digest
from transferscope.data import Dataset


def resolve_device(device: str | None) -> str:
    """``device``, or CUDA when available, else the CPU."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def pool(output) -> torch.Tensor:
    """(B, ...) activations -> (B, D): global average over spatial/temporal axes."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.dim() == 4:  # (B, C, H, W)
        return output.mean(dim=(2, 3))
    if output.dim() == 3:  # (B, C, L) from conv1d
        return output.mean(dim=2)
    return output.flatten(1)


def reinitialise(module: nn.Module, seed: int) -> nn.Module:
    """Random-init twin: every submodule with ``reset_parameters`` is reset, under ``seed``."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
    finally:
        torch.random.set_rng_state(gen_state)
    return module


class _CutReached(Exception):
    """Raised by the hook at a cut layer to end the forward pass there."""

    def __init__(self, output):
        super().__init__("cut layer reached")
        self.output = output


class TorchModuleBackend(FinetunableBackend):
    """A module plus a ``prepare(batch_inputs) -> tensor`` preprocessing step.

    Layers are the named submodules listed by ``block_names`` (in forward order); the special
    layer ``"output"`` is the module's own output.

    Parameters
    ----------
    name : str
        The model name.
    module : torch.nn.Module
        The network (put in eval mode).
    block_names : list of str
        Named submodules features can be read from, in forward order.
    default : str
        The default layer (what a new head sits on).
    preprocessing : Preprocessing, optional
        Declared input preparation (part of the identity).
    """

    modalities = ("image", "array", "series")

    def __init__(self, name: str, module: nn.Module, *, block_names: list[str],
                 default: str, preprocessing: Preprocessing | None = None):
        self.name = name
        self.module = module.eval()
        self.block_names = block_names
        self.default = default
        self.preprocessing = preprocessing
        self._digest = None

    def layers(self) -> list[str]:
        """The named blocks, then ``"output"``."""
        return [*self.block_names, "output"]

    # -- fine-tuning interface: what TransferModel needs from a backend whose weights train --
    def feature_fn(self, module: nn.Module, layer: str, *, cut: bool = False):
        """``x -> (B, D)`` pooled features of ``module`` (a copy of ``self.module``) at
        ``layer``, differentiable (a forward hook captures the layer's output). With ``cut``
        the forward pass stops at the layer: nothing after it is computed."""
        if layer == "output":
            return lambda x: pool(module(x))
        box: dict = {}

        def hook(_m, _i, out):
            if cut:
                raise _CutReached(out)
            box["out"] = out

        dict(module.named_modules())[layer].register_forward_hook(hook)

        def run(x):
            try:
                module(x)
            except _CutReached as reached:
                return pool(reached.output)
            return pool(box.pop("out"))

        return run

    @staticmethod
    def _expanded(module: nn.Module) -> list[tuple[str, nn.Module]]:
        """The module's children, Sequential/ModuleList children (stages) expanded one level."""
        blocks = []
        for name, child in module.named_children():
            if isinstance(child, (nn.Sequential, nn.ModuleList)):
                blocks += [(f"{name}.{n}", c) for n, c in child.named_children()]
            else:
                blocks.append((name, child))
        return blocks

    @staticmethod
    def _cut_index(blocks, layer: str) -> int:
        """Index of the last block that is, contains or lies inside ``layer``."""
        inside = [i for i, (n, _) in enumerate(blocks)
                  if layer == n or layer.startswith(n + ".") or n.startswith(layer + ".")]
        return inside[-1] if inside else len(blocks) - 1

    def blocks(self, module: nn.Module, layer: str) -> list[tuple[str, nn.Module]]:
        """Blocks in forward order up to ``layer`` (what freezing and learning-rate decay act
        on): the module's children, with Sequential/ModuleList children (stages) expanded one
        level; blocks after the cut (they do not shape the features) and blocks without
        parameters are left out."""
        blocks = self._expanded(module)
        if layer != "output":
            blocks = blocks[: self._cut_index(blocks, layer) + 1]
        return [(n, b) for n, b in blocks if next(b.parameters(), None) is not None]

    def truncate(self, module: nn.Module, layer: str) -> nn.Module:
        """Remove the blocks after ``layer`` from ``module`` (in place; replaced by
        ``nn.Identity``, so they hold no parameters). Pair with ``feature_fn(cut=True)``,
        which stops the forward pass at the layer, so the removed blocks are never called."""
        if layer == "output":
            return module
        blocks = self._expanded(module)
        for name, _ in blocks[self._cut_index(blocks, layer) + 1 :]:
            parent, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, attr, nn.Identity())
        return module

    def default_layer(self) -> str:
        """The layer given as ``default``."""
        return self.default

    def identity(self) -> str:
        """Name, module class, weights digest and preprocessing digest."""
        if self._digest is None:
            self._digest = weights_digest(self.module.state_dict())
        pre = self.preprocessing.digest() if self.preprocessing is not None else "none"
        return f"{self.name}|{type(self.module).__name__}|w={self._digest}|p={pre}"

    def prepare(self, batch, data: Dataset) -> torch.Tensor:
        """Arrays and series as float32 tensors, unchanged."""
        return torch.as_tensor(np.asarray(batch, dtype=np.float32))

    def features(self, data, layers, *, batch_size=64, device=None, progress=None):
        """Pooled outputs of the hooked blocks (see :meth:`Backend.features`)."""
        self.check_input(data)
        self.check_layers(layers)
        device = resolve_device(device)
        module = self.module.to(device)
        named = dict(module.named_modules())
        captured: dict[str, torch.Tensor] = {}
        hooks = [
            named[layer].register_forward_hook(
                lambda _m, _i, out, layer=layer: captured.__setitem__(layer, pool(out))
            )
            for layer in layers if layer != "output"
        ]
        chunks = {layer: [] for layer in layers}
        n = len(data)
        try:
            with torch.inference_mode():
                for start in range(0, n, batch_size):
                    batch = data.inputs[start : start + batch_size]
                    x = self.prepare(batch, data).to(device)
                    out = module(x)
                    for layer in layers:
                        value = pool(out) if layer == "output" else captured[layer]
                        chunks[layer].append(value.float().cpu().numpy())
                    if progress is not None:
                        progress(min(n, start + batch_size), n)
        finally:
            for h in hooks:
                h.remove()
        return {layer: np.concatenate(parts) for layer, parts in chunks.items()}
