"""Backends around a torch ``nn.Module``: hooks on named blocks, batched inference, pooling."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from transferscope.backends.base import (
    FinetunableBackend,
    Preprocessing,
    collect_features,
    weights_digest,
)
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


#: Output layouts a backend can declare for a layer (:class:`TorchModuleBackend` ``layouts``);
#: a layer without one is channels-first: (B, C, H, W) maps and (B, C, L) conv1d outputs.
LAYOUTS = {
    "NLC": "tokens: a 3-d output is (batch, tokens, channels), averaged over the tokens",
    "NHWC": "channels last: (batch, height, width, channels) maps and (batch, tokens, "
            "channels), averaged over all but the last axis",
}


def pool(output, *, where: str = "the model", batch: int | None = None,
         layout: str | None = None) -> torch.Tensor:
    """(B, ...) activations -> (B, D): global average over spatial/temporal/token axes.

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
    layout : str, optional
        A key of :data:`LAYOUTS`: ``"NLC"`` pools a 3-d output as (B, T, C) tokens (mean over
        T; a transformer block's output), ``"NHWC"`` pools 3-d and 4-d outputs over every axis
        but the last (channels-last maps); ``None`` is channels-first (the default above).

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
    if output.dim() == 3 and layout in ("NLC", "NHWC"):  # (B, T, C) tokens
        pooled = output.mean(dim=1)
    elif output.dim() == 4 and layout == "NHWC":  # (B, H, W, C)
        pooled = output.mean(dim=(1, 2))
    elif output.dim() == 4:  # (B, C, H, W)
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
                f"{preprocessing.size} px: declare another size, e.g. --input-size 224 or "
                "effnet-lite:0@224)")
    elif kind == "image" and preprocessing is not None:
        hint = ("check the input size it takes (images reach it at their own size: declare "
                "one, e.g. --input-size 224)")
    elif kind == "image":
        hint = ("check the input layout and size it takes (images reach a torch: model "
                "without declared preprocessing unchanged, as (batch, height, width[, "
                "channels]) floats in 0-255: return (module, {'size': ..., 'mean': ..., "
                "'std': ...}) from the factory or pass --input-size/--mean/--std)")
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
    """Random-init twin of ``module`` (in place), under ``seed``.

    A Hugging Face model is re-drawn by its own initialiser (``_init_weights`` on every
    submodule: the distribution it would be trained from scratch with, class tokens and
    position embeddings included); any other module has every submodule with
    ``reset_parameters`` reset. Parameters that neither touches (e.g. a bare ``nn.Parameter``
    class token in a user's module) are drawn from a truncated normal of std 0.02, the
    convention of ViT-style models (Dosovitskiy et al. 2021; timm). Batch-norm running
    statistics are reset.

    Parameters
    ----------
    module : torch.nn.Module
        The network (a copy of the pretrained one).
    seed : int
        Seed of the draw.

    Returns
    -------
    torch.nn.Module
        ``module``, re-initialised.
    """
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        hf_init = getattr(module, "_init_weights", None)
        for m in module.modules():
            if callable(hf_init):
                _clear_hf_initialised(m)
                hf_init(m)
            elif hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
        with torch.no_grad():
            for name, p in module.named_parameters():
                if (p.dtype.is_floating_point and p.numel() > 1 and bool(p.std() > 0)
                        and torch.equal(p, before[name])):
                    nn.init.trunc_normal_(p, std=0.02)
    finally:
        torch.random.set_rng_state(gen_state)
    return module


def _clear_hf_initialised(m: nn.Module) -> None:
    """Forget transformers' "already initialised" marks on ``m`` and its own parameters, so its
    ``_init_weights`` draws them again."""
    if getattr(m, "_is_hf_initialized", False):
        m._is_hf_initialized = False
    for p in m.parameters(recurse=False):
        if getattr(p, "_is_hf_initialized", False):
            p._is_hf_initialized = False


class _CutReached(Exception):
    """Raised by the hook at a cut layer to end the forward pass there."""

    def __init__(self, output):
        super().__init__("cut layer reached")
        self.output = output


class TorchModuleBackend(FinetunableBackend):
    """A module plus a ``prepare(batch_inputs) -> tensor`` preprocessing step.

    Layers are the named submodules listed by ``block_names`` (in forward order); the special
    layer ``"output"`` is the module's own output, and a layer named in ``inputs_of`` is the
    input of a submodule (e.g. ``"pre_logits"``: what the classifier reads).

    Parameters
    ----------
    name : str
        The model name.
    module : torch.nn.Module
        The network (put in eval mode).
    block_names : list of str
        Layers features can be read from, in forward order: named submodules, or names of
        ``inputs_of``.
    default : str
        The default layer (what a new head sits on).
    preprocessing : Preprocessing, optional
        Declared input preparation (part of the identity).
    source : str, optional
        The code that builds and runs the module (a user's file): its digest is part of the
        identity, so editing the forward pass never serves cached features of the old code.
    head : str, optional
        The layer whose features are the source model's class logits (see
        :meth:`~transferscope.backends.base.Backend.head_layer`); ``None`` for a model without a
        classifier.
    layouts : dict of str to str, optional
        ``{layer: layout}`` for layers whose outputs are not channels-first: ``"NLC"`` for
        (B, T, C) tokens (a transformer block), ``"NHWC"`` for channels-last maps; see
        :func:`pool`.
    inputs_of : dict of str to str, optional
        ``{layer: submodule}``: the layer is the (first) input of that submodule, read by a
        forward pre-hook (the classifier's input: pre-logits features).
    """

    modalities = ("image", "array", "series")

    def __init__(self, name: str, module: nn.Module, *, block_names: list[str],
                 default: str, preprocessing: Preprocessing | None = None,
                 source: str | None = None, head: str | None = None,
                 layouts: dict[str, str] | None = None, inputs_of: dict[str, str] | None = None):
        self.name = name
        self.module = module.eval()
        self.block_names = block_names
        self.default = default
        self.preprocessing = preprocessing
        self.source = source
        self.head = head
        self.layouts = dict(layouts or {})
        self.inputs_of = dict(inputs_of or {})
        bad = {k: v for k, v in self.layouts.items() if v not in LAYOUTS}
        if bad:
            raise ValueError(f"layouts must be among {sorted(LAYOUTS)}, got {bad}")
        self._digest = None

    def layers(self) -> list[str]:
        """The named blocks, then ``"output"``."""
        return [*self.block_names, "output"]

    def head_layer(self) -> str | None:
        """The layer given as ``head`` (``None``: no classifier head)."""
        return self.head

    def _pool(self, output, layer: str, batch: int | None) -> torch.Tensor:
        return pool(output, where=f"model {self.name!r} at layer {layer!r}", batch=batch,
                    layout=self.layouts.get(layer))

    def _attach(self, module: nn.Module, layer: str, fn):
        """Hook ``fn(value, batch)`` to the output of ``layer`` in ``module`` (to the input of
        its submodule for a layer of :attr:`inputs_of`); returns the hook handle."""
        target = self.inputs_of.get(layer)
        if target is not None:
            return module.get_submodule(target).register_forward_pre_hook(
                lambda _m, inp: fn(inp[0] if inp else None, _batch_of(inp)))
        return module.get_submodule(layer).register_forward_hook(
            lambda _m, inp, out: fn(out, _batch_of(inp)))

    # -- fine-tuning interface: what TransferModel needs from a backend whose weights train --
    def feature_fn(self, module: nn.Module, layer: str, *, cut: bool = False):
        """``x -> (B, D)`` pooled features of ``module`` (a copy of ``self.module``) at
        ``layer``, differentiable (a forward hook captures the layer's output). With ``cut``
        the forward pass stops at the layer: nothing after it is computed."""
        if layer == "output":
            return lambda x: self._pool(module(x), layer, len(x))
        box: dict = {}

        def hook(value, _batch):
            if cut:
                raise _CutReached(value)
            box["out"] = value

        self._attach(module, layer, hook)

        def run(x):
            box.clear()
            try:
                module(x)
            except _CutReached as reached:
                return self._pool(reached.output, layer, len(x))
            if "out" not in box:
                raise self._not_run(layer)
            return self._pool(box.pop("out"), layer, len(x))

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

    def _cut(self, blocks, layer: str) -> int:
        """Index of the last block that shapes ``layer``: for the input of a submodule (a layer
        of :attr:`inputs_of`), the block before that submodule, or the block holding it."""
        target = self.inputs_of.get(layer)
        if target is None:
            return self._cut_index(blocks, layer)
        at = [i for i, (n, _) in enumerate(blocks)
              if n == target or n.startswith(target + ".") or target.startswith(n + ".")]
        if not at:
            return len(blocks) - 1
        return at[0] if target.startswith(blocks[at[0]][0] + ".") else at[0] - 1

    def blocks(self, module: nn.Module, layer: str) -> list[tuple[str, nn.Module]]:
        """Blocks in forward order up to ``layer`` (what freezing and learning-rate decay act
        on): the module's children, with Sequential/ModuleList children (stages) expanded one
        level; blocks after the cut (they do not shape the features) and blocks without
        parameters are left out."""
        blocks = self._expanded(module)
        if layer != "output":
            blocks = blocks[: self._cut(blocks, layer) + 1]
        return [(n, b) for n, b in blocks if next(b.parameters(), None) is not None]

    def truncate(self, module: nn.Module, layer: str) -> nn.Module:
        """Remove the blocks after ``layer`` from ``module`` (in place; replaced by
        ``nn.Identity``, so they hold no parameters), and for the input of a submodule (e.g.
        ``"pre_logits"``) that submodule too. Pair with ``feature_fn(cut=True)``, which stops
        the forward pass at the layer, so the removed blocks are never called."""
        if layer == "output":
            return module
        blocks = self._expanded(module)
        for name, _ in blocks[self._cut(blocks, layer) + 1 :]:
            _replace(module, name)
        target = self.inputs_of.get(layer)
        if target is not None:
            try:
                _replace(module, target)
            except AttributeError:  # inside a block already removed
                pass
        return module

    def default_layer(self) -> str:
        """The layer given as ``default``."""
        return self.default

    def identity(self) -> str:
        """Name, module class, weights digest, structure digest (``repr`` of the module: its
        layers and their settings), the source digest of a user's code, how layers are read
        and pooled (when any is not a channels-first output), and the preprocessing digest."""
        if self._digest is None:  # hashed once (a twin resets it: new weights)
            self._digest = (weights_digest(self.module.state_dict()),
                            hashlib.sha256(repr(self.module).encode()).hexdigest()[:12])
        weights, structure = self._digest
        parts = [self.name, type(self.module).__name__, f"w={weights}", f"s={structure}"]
        if self.source is not None:
            parts.append("src=" + hashlib.sha256(self.source.encode()).hexdigest()[:12])
        if self.layouts or self.inputs_of:
            how = repr((sorted(self.layouts.items()), sorted(self.inputs_of.items())))
            parts.append("pool=" + hashlib.sha256(how.encode()).hexdigest()[:8])
        pre = self.preprocessing.digest() if self.preprocessing is not None else "none"
        return "|".join([*parts, f"p={pre}"])

    def prepare(self, batch, data: Dataset) -> torch.Tensor:
        """Arrays and series as float32 tensors, unchanged."""
        return torch.as_tensor(np.asarray(batch, dtype=np.float32))

    def features(self, data, layers, *, batch_size=64, device=None, progress=None,
                 num_workers: int = 0, precision: str = "fp32"):
        """Pooled outputs of the hooked blocks (see :meth:`Backend.features`); the batches of
        :meth:`iter_features`, gathered.

        Raises
        ------
        InputError
            When the first batch does not fit the model (the torch error's first line, the
            batch shape and what to check), or a layer gives no per-sample tensor.
        """
        chunks = self.iter_features(data, layers, batch_size=batch_size, device=device,
                                    num_workers=num_workers, precision=precision)
        return collect_features(chunks, len(data), progress)

    def iter_features(self, data, layers, *, batch_size=64, device=None, num_workers=0,
                      precision="fp32"):
        """Pooled outputs of the hooked blocks, one batch at a time (see
        :meth:`Backend.iter_features`).

        Batches of consecutive samples are read and prepared by a ``DataLoader``
        (:func:`transferscope.data.stream.batches`: ``num_workers`` processes, pinned memory
        on CUDA), so only a few batches are in memory at once; the forward pass runs under
        :func:`transferscope.precision.autocast` and features come back as float32.

        Yields
        ------
        tuple of (slice, dict of str to ndarray of shape (B, D_layer))
        """
        from transferscope.data.stream import batches
        from transferscope.precision import autocast, resolve_precision

        self.check_input(data)
        self.check_layers(layers)
        device = resolve_device(device)
        precision = resolve_precision(precision, device)
        module = self.module.to(device)
        captured: dict[str, torch.Tensor] = {}

        def keep(layer):  # pooled at once: no full activation map is kept
            def fn(value, batch):
                captured[layer] = self._pool(value, layer, batch)
            return fn

        n = len(data)
        order = [np.arange(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
        loader = batches(data, self.prepare, order, num_workers=num_workers,
                         pin_memory=device.startswith("cuda"))
        hooks = [self._attach(module, layer, keep(layer)) for layer in layers
                 if layer != "output"]
        try:
            for rows, (x, _) in zip(order, loader, strict=True):
                x = x.to(device, non_blocking=True)
                captured.clear()
                with torch.inference_mode():
                    try:
                        with autocast(precision, device):
                            out = module(x)
                    except InputError:  # a hooked layer's output that cannot be pooled
                        raise
                    except Exception as exc:  # noqa: BLE001 - any error of the user's forward
                        raise forward_error(self.name, x, exc, data.kind,
                                            self.preprocessing) from None
                    values = {}
                    for layer in layers:
                        if layer != "output" and layer not in captured:
                            raise self._not_run(layer)
                        value = (captured[layer] if layer != "output" else
                                 self._pool(out, "output", len(x)))
                        values[layer] = value.float().cpu().numpy()
                yield slice(int(rows[0]), int(rows[-1]) + 1), values
        finally:
            for h in hooks:
                h.remove()


def _batch_of(inputs) -> int | None:
    """The batch size of a hooked module's positional inputs (``None`` when unknown)."""
    first = inputs[0] if inputs else None
    return len(first) if isinstance(first, torch.Tensor) and first.dim() else None


def _replace(module: nn.Module, name: str) -> None:
    """Replace the submodule ``name`` of ``module`` by ``nn.Identity`` (in place)."""
    parent, _, attr = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, attr, nn.Identity())
