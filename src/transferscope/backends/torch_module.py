"""Backends around a torch ``nn.Module``: hooks on named blocks, batched inference, pooling."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from transferscope.backends.base import FinetunableBackend, Preprocessing, weights_digest
from transferscope.data import Dataset
from transferscope.errors import InputError, first_line


def resolve_device(device: str | None) -> str:
    """``device``, or CUDA when available, else the CPU."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def describe_output(output) -> str:
    """A few words on what a forward pass returned (for error messages)."""
    if isinstance(output, torch.Tensor):
        return f"a {output.dim()}-d tensor of shape {tuple(output.shape)}"
    if isinstance(output, dict):
        return f"a {type(output).__name__} with keys {list(output)[:5]}"
    if isinstance(output, (tuple, list)):
        return f"a {type(output).__name__} of {len(output)} items"
    return "None" if output is None else f"a {type(output).__name__}"


def pool(output, *, where: str = "the model", batch: int | None = None) -> torch.Tensor:
    """(B, ...) activations -> (B, D): global average over spatial/temporal axes.

    Parameters
    ----------
    output : torch.Tensor, or a tuple or list whose first item is one
        A layer's (or the model's) output: (B, C, H, W) feature maps and (B, C, L) conv1d
        outputs are averaged over their last axes, anything else of rank >= 2 is flattened
        after the batch axis.
    where : str
        What gave ``output`` (for error messages), e.g. ``"model 'x' at layer 'output'"``.
    batch : int, optional
        The batch size the output must keep as its first axis.

    Returns
    -------
    torch.Tensor of shape (B, D)

    Raises
    ------
    InputError
        For an output that is not a tensor (a dict, None, ...), a 0-d or 1-d tensor (no
        feature axis: never pooled into a guess), another batch size, or zero features.
    """
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.dim() < 2:
        raise InputError(
            f"Expected {where} to give a tensor of shape (batch, features, ...), got "
            f"{describe_output(output)}; return per-sample features with the batch axis first "
            "from forward() (e.g. x.flatten(1), not x.sum() or a dict), or pick another layer "
            "(--layer)"
        )
    if batch is not None and output.shape[0] != batch:
        raise InputError(
            f"Expected {where} to keep the batch axis first (batch {batch}), got "
            f"{describe_output(output)}; do not reshape across samples in forward()"
        )
    if output.dim() == 4:  # (B, C, H, W)
        pooled = output.mean(dim=(2, 3))
    elif output.dim() == 3:  # (B, C, L) from conv1d
        pooled = output.mean(dim=2)
    else:
        pooled = output.flatten(1)
    if pooled.shape[1] == 0:
        raise InputError(f"Expected {where} to give at least one feature, got "
                         f"{describe_output(output)}; pick another layer (--layer)")
    return pooled


def forward_error(name: str, x, exc: BaseException, kind: str | None = None,
                  preprocessing: Preprocessing | None = None) -> InputError:
    """The one-line error for a forward pass that failed on a batch.

    Parameters
    ----------
    name : str
        The model name.
    x : torch.Tensor
        The input batch it got.
    exc : Exception
        What the forward pass raised (its first line is quoted).
    kind : str, optional
        The dataset kind (``"series"``, ``"array"``, ``"image"``, ``"text"``): picks the hint.
    preprocessing : Preprocessing, optional
        The model's declared input preparation (image models: the input size).

    Returns
    -------
    InputError
        Naming the model, the batch shape, the error's first line and what to check.
    """
    first = first_line(exc, 240)
    shape = tuple(getattr(x, "shape", ()))
    where = _code_line(exc)
    if not isinstance(exc, (RuntimeError, ValueError, IndexError)):  # the code, not the shapes
        hint = "fix the model's forward()"
    elif kind == "series" and len(shape) == 3:
        hint = (f"check that its first layer takes {shape[1]} channel(s) of length "
                f"{shape[2]} (series reach the model as (batch, channels, length))")
    elif kind == "array" and len(shape) == 2:
        hint = f"check that its first layer takes {shape[1]} input features"
    elif kind == "image" and preprocessing is not None and preprocessing.size is not None:
        hint = (f"check the input size it takes (images are resized to "
                f"{preprocessing.size} px: declare another size, e.g. effnet-lite:0@224)")
    elif kind == "image":
        hint = ("check the input layout and size it takes (images reach a torch: model "
                "unchanged, as (batch, height, width[, channels]) floats in 0-255)")
    else:
        hint = ("check that its input channels and length or width fit the data, or declare "
                "the input size it takes")
    return InputError(
        f"Expected model {name!r} to run on an input batch of shape {shape}, got "
        f"{type(exc).__name__}: {first}{where}; {hint}"
    )


def _code_line(exc: BaseException) -> str:
    """`` (line N of file.py)``: the deepest frame of the error outside torch and this package
    (the user's own code), or ``""``."""
    import traceback
    from pathlib import Path

    skip = (Path(torch.__file__).parent, Path(__file__).parents[1])
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not any(Path(f.filename).is_relative_to(d) for d in skip)]
    return f" (line {frames[-1].lineno} of {Path(frames[-1].filename).name})" if frames else ""


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
    source : str, optional
        The code that builds and runs the module (a user's file): its digest is part of the
        identity, so editing the forward pass never serves cached features of the old code.
    """

    modalities = ("image", "array", "series")

    def __init__(self, name: str, module: nn.Module, *, block_names: list[str],
                 default: str, preprocessing: Preprocessing | None = None,
                 source: str | None = None):
        self.name = name
        self.module = module.eval()
        self.block_names = block_names
        self.default = default
        self.preprocessing = preprocessing
        self.source = source
        self._digest = None

    def layers(self) -> list[str]:
        """The named blocks, then ``"output"``."""
        return [*self.block_names, "output"]

    # -- fine-tuning interface: what TransferModel needs from a backend whose weights train --
    def feature_fn(self, module: nn.Module, layer: str, *, cut: bool = False):
        """``x -> (B, D)`` pooled features of ``module`` (a copy of ``self.module``) at
        ``layer``, differentiable (a forward hook captures the layer's output). With ``cut``
        the forward pass stops at the layer: nothing after it is computed."""
        where = f"model {self.name!r} at layer {layer!r}"
        if layer == "output":
            return lambda x: pool(module(x), where=where, batch=len(x))
        box: dict = {}

        def hook(_m, _i, out):
            if cut:
                raise _CutReached(out)
            box["out"] = out

        dict(module.named_modules())[layer].register_forward_hook(hook)

        def run(x):
            box.clear()
            try:
                module(x)
            except _CutReached as reached:
                return pool(reached.output, where=where, batch=len(x))
            if "out" not in box:
                raise self._not_run(layer)
            return pool(box.pop("out"), where=where, batch=len(x))

        return run

    def _not_run(self, layer: str) -> InputError:
        return InputError(
            f"Expected layer {layer!r} of model {self.name!r} to run in its forward pass, got "
            f"no output from it; pick a layer that forward() calls (layers: "
            f"{', '.join(self.layers()[:8])}{' ...' if len(self.layers()) > 8 else ''})"
        )

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
        """Name, module class, weights digest, structure digest (``repr`` of the module: its
        layers and their settings), the source digest of a user's code, and the preprocessing
        digest."""
        if self._digest is None:  # hashed once (a twin resets it: new weights)
            self._digest = (weights_digest(self.module.state_dict()),
                            hashlib.sha256(repr(self.module).encode()).hexdigest()[:12])
        weights, structure = self._digest
        parts = [self.name, type(self.module).__name__, f"w={weights}", f"s={structure}"]
        if self.source is not None:
            parts.append("src=" + hashlib.sha256(self.source.encode()).hexdigest()[:12])
        pre = self.preprocessing.digest() if self.preprocessing is not None else "none"
        return "|".join([*parts, f"p={pre}"])

    def prepare(self, batch, data: Dataset) -> torch.Tensor:
        """Arrays and series as float32 tensors, unchanged."""
        return torch.as_tensor(np.asarray(batch, dtype=np.float32))

    def features(self, data, layers, *, batch_size=64, device=None, progress=None):
        """Pooled outputs of the hooked blocks (see :meth:`Backend.features`).

        Raises
        ------
        InputError
            When the first batch does not fit the model (the torch error's first line, the
            batch shape and what to check), or a layer gives no per-sample tensor.
        """
        self.check_input(data)
        self.check_layers(layers)
        device = resolve_device(device)
        module = self.module.to(device)
        named = dict(module.named_modules())
        captured: dict[str, torch.Tensor] = {}

        def keep(layer, out, batch):  # pooled at once: no full activation map is kept
            captured[layer] = pool(out, where=f"model {self.name!r} at layer {layer!r}",
                                   batch=batch)

        hooks = [
            named[layer].register_forward_hook(
                lambda _m, inp, out, layer=layer: keep(layer, out, len(inp[0]) if inp else None)
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
                    captured.clear()
                    try:
                        out = module(x)
                    except InputError:  # a hooked layer's output that cannot be pooled
                        raise
                    except Exception as exc:  # noqa: BLE001 - any error of the user's forward
                        raise forward_error(self.name, x, exc, data.kind,
                                            self.preprocessing) from None
                    for layer in layers:
                        if layer != "output" and layer not in captured:
                            raise self._not_run(layer)
                        value = (captured[layer] if layer != "output" else
                                 pool(out, where=f"model {self.name!r} at layer 'output'",
                                      batch=len(x)))
                        chunks[layer].append(value.float().cpu().numpy())
                    if progress is not None:
                        progress(min(n, start + batch_size), n)
        finally:
            for h in hooks:
                h.remove()
        return {layer: np.concatenate(parts) for layer, parts in chunks.items()}
