"""The baselines: ``raw`` (the input itself) and ``random:<model>`` (the from-scratch twin),
and ``torch:<file.py>:<factory>[@<checkpoint>]`` for any user-written module.

A user's module
---------------
``<factory>()`` returns the ``nn.Module``, or ``(module, preprocessing)``; the module may also
carry ``module.preprocessing``. A preprocessing is a
:class:`~transferscope.backends.base.Preprocessing` or a dict of its fields (``size``, ``mean``,
``std``, ``interpolation``, ``crop_pct``, ``layout``). What the module receives:

- image data with a declaration: (B, 3, size, size) float tensors, resized, centre-cropped and
  normalised like every image model (:func:`~transferscope.backends.images.to_tensor_batch`;
  ``layout`` ``"NHWC"`` or ``"ND"`` permutes or flattens them);
- image data without one: the images unchanged, (B, H, W[, C]) float32 (uint8 pixels as
  0-255, float images as they are). A module whose first convolution would read that batch as
  channels-first is refused before it runs (one line saying what to declare); a module that
  flattens or permutes the images itself keeps working;
- arrays: (B, D) float32; series: (B, C, L) float32, declaration or not.

Layers are the module's direct children (and ``"output"``). A 3-d output is pooled as (B, C, L)
conv1d maps, except for children that are batch-first transformer layers and the layers the
module names in ``module.token_layers`` (pooled as (B, T, C) tokens). The output is the source
classifier (LEEP, NCE) when the module ends in a ``Linear`` of >= 2 units or a softmax.

Checkpoints load weights only (safetensors, or ``torch.load(weights_only=True)``); a training
checkpoint's state dict nested under ``state_dict``, ``model``, ... and the ``module.``
(DistributedDataParallel) and ``_orig_mod.`` (``torch.compile``) key prefixes are unwrapped,
each step reported with :func:`~transferscope.errors.note`.
"""

from __future__ import annotations

import copy
import hashlib
import sys
import types
import warnings
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferscope.backends.base import (
    Backend,
    FinetunableBackend,
    Preprocessing,
    register_backend,
    weights_digest,
)
from transferscope.backends.images import check_preprocessing, images_in_layout
from transferscope.backends.torch_module import TorchModuleBackend, reinitialise
from transferscope.errors import InputError, first_line, note
from transferscope.registry import suggest

RAW_IMAGE_SIZE = 32
RAW_TEXT_FEATURES = 1024


class RawBackend(Backend):
    """No model: images resized to at most 32 x 32 and flattened, arrays and series flattened,
    text as an L2-normalised hashed bag of words (1,024 buckets, unigrams and bigrams)."""

    name = "raw"
    modalities = ("image", "text", "array", "series")

    def layers(self):
        """The single layer ``"input"`` (the data itself)."""
        return ["input"]

    def default_layer(self):
        """``"input"``."""
        return "input"

    def identity(self):
        """The fixed recipe: image size limit and number of text hash buckets."""
        return f"raw|image<={RAW_IMAGE_SIZE}|text-hash={RAW_TEXT_FEATURES}"

    def features(self, data, layers, *, batch_size=64, device=None, progress=None):
        """The input itself as features (see :meth:`Backend.features`).

        Returns
        -------
        dict of str to ndarray of shape (N, D)
            ``{"input": x}``: images larger than 32 x 32 area-resized to 32 x 32, divided by
            255 and flattened (D = H * W * C); arrays and series flattened; text as (N, 1024)
            L2-normalised hashed unigram and bigram counts.
        """
        self.check_input(data)
        self.check_layers(layers)
        if data.kind == "text":
            from sklearn.feature_extraction.text import HashingVectorizer

            vec = HashingVectorizer(n_features=RAW_TEXT_FEATURES, ngram_range=(1, 2),
                                    alternate_sign=False)
            x = vec.transform(list(data.inputs)).toarray().astype(np.float32)
        elif data.kind == "image":
            x = np.stack([self._image(img) for img in data.inputs])
        else:
            x = np.asarray(data.inputs, dtype=np.float32).reshape(len(data), -1)
        if progress is not None:
            progress(len(data), len(data))
        return {"input": x}

    @staticmethod
    def _image(img) -> np.ndarray:
        a = np.asarray(img, dtype=np.float32)
        if max(a.shape[:2]) > RAW_IMAGE_SIZE:
            t = torch.from_numpy(a if a.ndim == 3 else a[..., None]).permute(2, 0, 1)[None]
            t = torch.nn.functional.interpolate(t, size=(RAW_IMAGE_SIZE, RAW_IMAGE_SIZE),
                                                mode="area")
            a = t[0].permute(1, 2, 0).numpy()
        return (a / 255.0).reshape(-1)


@register_backend("raw")
def _raw(name):
    return RawBackend()


def random_twin(inner: Backend) -> Backend:
    """The same architecture and preprocessing as ``inner``, randomly initialised.

    Parameters
    ----------
    inner : FinetunableBackend
        A model with weights.

    Returns
    -------
    FinetunableBackend
        A shallow copy named ``random:<name>`` whose module is re-initialised under a seed
        derived from ``inner``'s weights (the same twin wherever the model lives).
    """
    if not isinstance(inner, FinetunableBackend):
        raise InputError(f"Expected a model with weights after 'random:', got {inner.name!r}; "
                         "pick a model with weights (effnet-lite, hf:, torch:, timm:, "
                         "torchvision:)")
    # a seed derived from the pretrained weights: the same twin wherever the model lives on
    # disk, and unlike the small seeds (0, 42, ...) a module may itself be initialised with
    seed = int(weights_digest(inner.module.state_dict())[:8], 16)
    twin = copy.copy(inner)
    twin.module = reinitialise(copy.deepcopy(inner.module), seed)
    twin.name = f"random:{inner.name}"
    twin._digest = None
    return twin


SAFETENSORS_HOW = ("save the weights where the model was made with "
                   "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')")
NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def _is_safetensors(path: Path) -> bool:
    """Whether the file starts like safetensors: an 8-byte header length, then ``{``."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def _refusal(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused (without its advice to unpickle anyway)."""
    text = str(exc)
    if "WeightsUnpickler error:" not in text:
        return "objects other than tensors"
    detail = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
    detail = " ".join(detail.split()).split(". ")[0]
    return detail[:120].rstrip(".") or "objects other than tensors"


def load_checkpoint(path: Path) -> dict:
    """Weights only: safetensors, or torch.load(weights_only=True) - never arbitrary pickles.

    Parameters
    ----------
    path : str or Path
        A ``.safetensors`` file (recognised by its content too), or a ``.pt``/``.pth`` file that
        ``torch.save`` wrote from a state dict.

    Returns
    -------
    dict of str to torch.Tensor
        The state dict; one nested under ``state_dict`` (or ``model``, ...) in a training
        checkpoint is taken out (and reported with :func:`~transferscope.errors.note`).

    Raises
    ------
    InputError
        For a missing file, a file that does not read as a checkpoint (random bytes, truncated),
        a pickle that is not weights-only (nothing of it runs), or a content other than named
        tensors.
    """
    state, steps = read_checkpoint(path)
    if steps:
        note(f"checkpoint {Path(path).name}: {' and '.join(steps)}")
    return state


def read_checkpoint(path: Path) -> tuple[dict, list[str]]:
    """:func:`load_checkpoint` without the note: the state dict, and what was done to find it.

    Parameters
    ----------
    path : str or Path
        The checkpoint.

    Returns
    -------
    state : dict of str to torch.Tensor
    steps : list of str
        E.g. ``["took the state dict under 'state_dict'"]``; empty for a plain state dict.
    """
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise InputError(f"Expected a checkpoint file after '@' (.safetensors, or a .pt/.pth "
                         f"state dict), got {path} ({what}); check the path")
    if path.suffix == ".safetensors" or _is_safetensors(path):
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise InputError(
                f"Expected a safetensors checkpoint in {path.name}, got a file that does not "
                f"read as one ({first_line(exc)}); the file may be truncated or not "
                f"safetensors: {SAFETENSORS_HOW}"
            ) from None
    else:
        with open(path, "rb") as fh:
            head = fh.read(4)
        framed = head[:1] == b"\x80" or head == b"PK\x03\x04"  # a pickle, or torch's zip
        try:
            with warnings.catch_warnings():  # e.g. on the pickle protocol: the error says it
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises several types for bad files
            if framed and "Weights only load failed" in str(exc):
                raise InputError(
                    f"Expected a weights-only checkpoint (a state dict of tensors) in "
                    f"{path.name}, got a pickle that is not weights-only ({_refusal(exc)}); it "
                    f"was not loaded and none of its code ran: {SAFETENSORS_HOW}"
                ) from None
            why = (f"{type(exc).__name__}: {first_line(exc)}" if framed
                   and "weights_only" not in str(exc) else
                   "neither torch's zip format nor a pickle" if not framed else
                   _refusal(exc))
            raise InputError(
                f"Expected a checkpoint in {path.name} (a torch.save of a state dict, or "
                f"safetensors), got a file that does not read as one ({why}); the file may be "
                f"truncated or of another format: {SAFETENSORS_HOW}"
            ) from None
    return _state_dict(state, path)


def _state_dict(state, path: Path) -> tuple[dict, list[str]]:
    """``state`` checked to be named tensors (a nested training-checkpoint entry taken out)."""
    under = []
    while (isinstance(state, dict) and len(under) < 3
           and not all(isinstance(v, torch.Tensor) for v in state.values())):
        nested = [k for k in NESTED_STATE_KEYS if isinstance(state.get(k), dict)]
        if not nested:
            break
        under.append(nested[0])
        state = state[nested[0]]
    if not isinstance(state, dict) or not state:
        got = f"an empty {type(state).__name__}" if isinstance(state, dict) else \
            f"a {type(state).__name__}"
        raise InputError(f"Expected a state dict (parameter names to tensors) in {path.name}, "
                         f"got {got}; {SAFETENSORS_HOW}")
    bad = [(k, v) for k, v in state.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        k, v = bad[0]
        raise InputError(f"Expected a state dict of tensors in {path.name}, got a "
                         f"{type(v).__name__} under {k!r}; {SAFETENSORS_HOW}")
    steps = [f"took the state dict under {' > '.join(repr(k) for k in under)}"] if under else []
    return state, steps


#: Key prefixes that wrappers leave in a saved state dict: ``module.`` (DistributedDataParallel,
#: DataParallel) and ``_orig_mod.`` (``torch.compile``).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def fit_state_dict(state: dict, keys) -> tuple[dict, list[str]]:
    """``state`` with the key prefixes of wrappers removed, so that its keys fit ``keys``.

    A prefix of :data:`WRAPPER_PREFIXES` is removed when every key has it, or when removing it
    makes the keys equal the module's (repeatedly: ``module._orig_mod.`` too); then a leading
    name that every key shares (e.g. ``model.`` of a Lightning module) when removing it makes
    them fit. Keys that already fit are left alone.

    Parameters
    ----------
    state : dict of str to torch.Tensor
        A checkpoint's state dict.
    keys : iterable of str
        The module's own state-dict keys.

    Returns
    -------
    state : dict
    steps : list of str
        What was removed, e.g. ``["removed the 'module.' prefix from 62 keys"]``.
    """
    own = set(keys)
    removed: list[tuple[str, int]] = []
    while set(state) != own:
        for prefix in WRAPPER_PREFIXES:
            n = sum(k.startswith(prefix) for k in state)
            if not n:
                continue
            stripped = {k.removeprefix(prefix): v for k, v in state.items()}
            if len(stripped) == len(state) and (n == len(state) or set(stripped) == own):
                state = stripped
                removed.append((prefix, n))
                break
        else:
            break
    heads = {k.partition(".")[0] for k in state}
    if set(state) != own and len(heads) == 1 and all("." in k for k in state):
        prefix = heads.pop() + "."
        stripped = {k.removeprefix(prefix): v for k, v in state.items()}
        if set(stripped) == own:
            state = stripped
            removed.append((prefix, len(stripped)))
    if removed and all(n == len(state) for _, n in removed):
        removed = [("".join(p for p, _ in removed), len(state))]
    return state, [f"removed the {p!r} prefix from {n} keys" for p, n in removed]


def load_into(module: torch.nn.Module, state: dict, what: str, ckpt: Path) -> None:
    """Load ``state`` into ``module`` after checking names and shapes (one-line errors)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise InputError(
            f"Expected checkpoint {ckpt.name} to fit {what}, got missing keys {missing[:3]} and "
            f"unexpected keys {unexpected[:3]}; save the state_dict() of the same architecture"
        )
    shapes = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if shapes:
        k = shapes[0]
        raise InputError(
            f"Expected checkpoint {ckpt.name} to fit {what}, got {len(shapes)} tensor(s) of "
            f"another shape, e.g. {k!r}: {tuple(state[k].shape)} in the file, "
            f"{tuple(own[k].shape)} in the model; build the model the checkpoint was saved from"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"Expected checkpoint {ckpt.name} to fit {what}, got "
                         f"{first_line(exc)}") from None


def declare_how(size: int = 224) -> str:
    """How a user declares the preprocessing of a module (the fix part of a message)."""
    return (f"return (module, {{'size': {size}, 'mean': [0.485, 0.456, 0.406], 'std': "
            "[0.229, 0.224, 0.225]}) from the factory, set module.preprocessing to such a "
            "dict, or pass --input-size/--mean/--std")


def declared_preprocessing(value, where: str) -> Preprocessing | None:
    """A user's declaration of how inputs reach the module, as a :class:`Preprocessing`.

    Parameters
    ----------
    value : Preprocessing, dict or None
        What the factory returned beside the module (or ``module.preprocessing``): a
        :class:`Preprocessing`, or a dict of its fields (``size``, ``mean``, ``std``,
        ``interpolation``, ``crop_pct``, ``layout``).
    where : str
        Who declared it, for the message (e.g. ``"the preprocessing build() in net.py
        declares"``).

    Returns
    -------
    Preprocessing or None
        ``None`` when ``value`` is ``None`` (nothing declared).

    Raises
    ------
    InputError
        For another type, an unknown field (did-you-mean), or a value of the wrong type or
        range (:func:`~transferscope.backends.images.check_preprocessing`).
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        known = [f.name for f in fields(Preprocessing)]
        unknown = [k for k in value if k not in known]
        if unknown:
            k = str(unknown[0])
            raise InputError(f"Expected preprocessing fields among {', '.join(known)} in "
                             f"{where}, got {k!r}{suggest(k, known)}")
        for key in ("mean", "std"):
            v = value.get(key, (0.0,) * 3)
            v = v.tolist() if isinstance(v, (np.ndarray, torch.Tensor)) else v
            if not isinstance(v, (list, tuple)) or not all(
                    isinstance(e, (int, float, np.number)) and not isinstance(e, bool)
                    for e in v):
                raise InputError(f"Expected {key} to be 3 numbers (one per RGB channel, for "
                                 f"pixels in [0, 1]) in {where}, got {v!r}; declare e.g. "
                                 f"'{key}': [0.5, 0.5, 0.5]")
        for key, kinds, what in (("crop_pct", (int, float), "a number in (0, 1]"),
                                 ("interpolation", (str,), "a string such as 'bicubic'"),
                                 ("layout", (str,), "a string such as 'NCHW'")):
            if key in value and (not isinstance(value[key], kinds)
                                 or isinstance(value[key], bool)):
                raise InputError(f"Expected {key} to be {what} in {where}, got "
                                 f"{value[key]!r}")
        size = value.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer))
                                 or size < 1):
            raise InputError(f"Expected an input size that is a whole number >= 1 in {where}, "
                             f"got {size!r}; declare e.g. 'size': 224")
        try:
            value = Preprocessing(**value)
        except InputError as exc:
            raise InputError(f"{exc} in {where}") from None
    if not isinstance(value, Preprocessing):
        raise InputError(f"Expected a dict of preprocessing fields (size, mean, std, ...) or a "
                         f"transferscope Preprocessing in {where}, got a {type(value).__name__}; "
                         f"{declare_how()}")
    return check_preprocessing(value, where)


def _tokens_first(module: nn.Module) -> bool:
    """Whether ``module`` is a batch-first transformer layer (its output is (B, T, C))."""
    kinds = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.TransformerEncoder,
             nn.TransformerDecoder, nn.Transformer, nn.MultiheadAttention)
    if not isinstance(module, kinds):
        return False
    attn = next((m for m in module.modules() if isinstance(m, nn.MultiheadAttention)), None)
    return bool(attn is not None and attn.batch_first)


def ends_in_classifier(module: nn.Module) -> bool:
    """Whether the module's last leaf (in registration order) is a classifier: a ``Linear``
    with >= 2 outputs, or a softmax (its output is then the source model's logits or
    probabilities)."""
    leaves = [m for m in module.modules() if next(m.children(), None) is None]
    last = leaves[-1] if leaves else None
    if isinstance(last, nn.Linear):
        return not isinstance(last.out_features, int) or last.out_features >= 2
    return isinstance(last, (nn.Softmax, nn.LogSoftmax))


class _FirstConv(Exception):
    """Raised by the probe's pre-hook at the first convolution (its input is all it needs)."""

    def __init__(self, name, conv, value):
        super().__init__("first convolution reached")
        self.name, self.conv, self.value = name, conv, value


class UserModuleBackend(TorchModuleBackend):
    """A module from the user's own file; layers are its direct children.

    Parameters
    ----------
    name : str
        The model name.
    module : torch.nn.Module
        The network the factory built.
    source : str, optional
        The file's source code (part of the identity: edited code is never served stale
        features).
    preprocessing : Preprocessing, optional
        How image data reaches the module (see the module docstring); ``None``: unchanged.
    token_layers : sequence of str
        Layers whose 3-d outputs are (B, T, C) tokens (averaged over T); batch-first
        transformer children are found without being named.
    """

    def __init__(self, name: str, module: torch.nn.Module, source: str | None = None, *,
                 preprocessing: Preprocessing | None = None, token_layers=()):
        children = [n for n, _ in module.named_children()]
        layouts = {n: "NLC" for n, c in module.named_children() if _tokens_first(c)}
        layouts.update({layer: "NLC" for layer in token_layers})
        super().__init__(name, module, block_names=children,
                         default=children[-2] if len(children) > 1 else "output",
                         preprocessing=preprocessing, source=source,
                         head="output" if ends_in_classifier(module) else None,
                         layouts=layouts)
        self._probed: set = set()

    def with_preprocessing(self, **changes):
        """As :meth:`FinetunableBackend.with_preprocessing`, checked
        (:func:`~transferscope.backends.images.check_preprocessing`)."""
        out = super().with_preprocessing(**changes)
        check_preprocessing(out.preprocessing, f"the preprocessing of model {self.name!r}")
        return out

    def prepare(self, batch, data) -> torch.Tensor:
        """Arrays and series as float32, unchanged; images per the declared preprocessing
        (resized, normalised, in its layout), or unchanged (B, H, W[, C]) float32 without one
        (checked against the module's first convolution: see the module docstring).

        Raises
        ------
        InputError
            For undeclared images that the module's first convolution would read as
            channels-first, or a declared layout that does not hold images.
        """
        if getattr(data, "kind", None) != "image":
            return super().prepare(batch, data)
        if self.preprocessing is not None:
            return images_in_layout(batch, self.preprocessing, f"model {self.name!r}")
        x = super().prepare(batch, data)
        self._check_raw_images(x)
        return x

    def _check_raw_images(self, x: torch.Tensor) -> None:
        """Refuse undeclared images that reach a convolution unchanged (once per image shape).

        One sample runs up to the module's first convolution (a pre-hook stops it there);
        when that convolution's input is the raw (B, H, W[, C]) batch, or has its shape (only
        rescaled), the module would read rows as channels: a one-line error says what to
        declare. Any other outcome (no convolution, a forward that permutes or flattens the
        images, an error of the forward) is left to the real forward pass.
        """
        key = tuple(x.shape[1:])
        if key in self._probed or len(x) == 0:
            return
        self._probed.add(key)
        convs = [(n, m) for n, m in self.module.named_modules()
                 if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
        if not convs:
            return

        def stop(name):
            def hook(conv, inputs):
                raise _FirstConv(name, conv, inputs[0] if inputs else None)
            return hook

        param = next(self.module.parameters(), None)
        probe = x[:1].to(param.device if param is not None else "cpu")
        hooks = [m.register_forward_pre_hook(stop(n)) for n, m in convs]
        try:
            with torch.no_grad():
                self.module(probe)
        except _FirstConv as first:
            seen = first.value
            raw = seen is probe or (isinstance(seen, torch.Tensor)
                                    and tuple(seen.shape) == tuple(probe.shape))
            if raw:
                conv = first.conv
                raise InputError(
                    f"Expected model {self.name!r} to declare how images reach it (size, mean, "
                    f"std), got no preprocessing, and its first convolution {first.name!r} "
                    f"({type(conv).__name__}, {conv.in_channels} input channel(s)) would read "
                    f"the images unchanged, as (batch, height, width[, channels]) floats "
                    f"(batch shape {tuple(x.shape)}), rows as channels; "
                    + declare_how(key[0])
                ) from None
        except Exception:  # noqa: BLE001 S110 - the real forward pass reports its own errors
            pass
        finally:
            for h in hooks:
                h.remove()


def _user_frame_line(exc: BaseException, path: Path) -> str:
    """`` (line N of file.py)`` for the deepest traceback frame in the user's file."""
    import traceback

    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
             if Path(f.filename).resolve() == path.resolve()]
    return f" (line {lines[-1]} of {path.name})" if lines else ""


def import_user_file(path: Path):
    """Import the user's file as a fresh module (one-line errors for code that does not run)."""
    if path.suffix != ".py":
        raise InputError(f"Expected a Python file (.py) in torch:<file.py>:<factory>, got "
                         f"{path.name}; rename it to end in .py")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Expected a readable UTF-8 Python file, got {path.name} "
                         f"({first_line(exc)}); save it as UTF-8") from None
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    modname = f"tscope_user_{digest}_{''.join(c if c.isalnum() else '_' for c in path.stem)}"
    mod = types.ModuleType(modname)
    mod.__file__ = str(path)
    previous = sys.modules.get(modname)
    sys.modules[modname] = mod  # dataclasses and pickling look the module up by name
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # its sibling modules import, as under `python file.py`
    try:
        code = compile(source, str(path), "exec")
        exec(code, mod.__dict__)  # noqa: S102 - the user's own code, by the user's own request
    except SyntaxError as exc:
        _restore(modname, previous)
        raise InputError(
            f"Expected valid Python in {path.name}, got {type(exc).__name__} at line "
            f"{exc.lineno}: {exc.msg}; fix the file"
        ) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever the user's file raises
        _restore(modname, previous)
        what = "sys.exit()" if isinstance(exc, SystemExit) else \
            f"{type(exc).__name__}: {first_line(exc)}"
        raise InputError(
            f"Expected {path.name} to import, got {what}{_user_frame_line(exc, path)}; fix the "
            "file (or install what it imports) so that `python " + path.name + "` runs"
        ) from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return mod, source


def _restore(modname: str, previous) -> None:
    if previous is None:
        sys.modules.pop(modname, None)
    else:
        sys.modules[modname] = previous


def build_user_module(path: Path, factory: str):
    """``factory()`` of the user's file, checked to be an ``nn.Module`` (one-line errors).

    Parameters
    ----------
    path : Path
        The user's ``.py`` file.
    factory : str
        The name of a function in it that returns the network, or ``(network,
        preprocessing)``.

    Returns
    -------
    tuple of (torch.nn.Module, str, Preprocessing or None)
        The network, the file's source code, and the declared preprocessing (returned beside
        the module, else ``module.preprocessing``; see :func:`declared_preprocessing`).
    """
    mod, source = import_user_file(path)
    fn = getattr(mod, factory, None)
    if fn is None:
        names = [n for n, v in vars(mod).items() if callable(v) and not n.startswith("_")
                 and getattr(v, "__module__", None) == mod.__name__]
        raise InputError(f"Expected a function {factory!r} in {path.name}, got none"
                         f"{suggest(factory, names)}; define def {factory}(): returning the "
                         "nn.Module")
    if not callable(fn):
        raise InputError(f"Expected {factory} in {path.name} to be a function returning an "
                         f"nn.Module, got a {type(fn).__name__}; define def {factory}(): ...")
    try:
        module = fn()
    except Exception as exc:  # noqa: BLE001 - whatever the user's factory raises
        raise InputError(
            f"Expected {factory}() in {path.name} to build an nn.Module, got "
            f"{type(exc).__name__}: {first_line(exc)}{_user_frame_line(exc, path)}; fix the "
            "factory (it is called without arguments)"
        ) from None
    declared = None
    if isinstance(module, tuple):
        if len(module) != 2 or not isinstance(module[0], torch.nn.Module):
            what = ", ".join(type(v).__name__ for v in module[:3])
            raise InputError(
                f"Expected {factory}() in {path.name} to build an nn.Module or (nn.Module, "
                f"preprocessing), got a tuple of {len(module)} items ({what}); return the "
                "network, or the network and a dict such as {'size': 224, 'mean': [...], "
                "'std': [...]}"
            )
        module, declared = module
        where = f"the preprocessing {factory}() in {path.name} returns"
    if not isinstance(module, torch.nn.Module):
        raise InputError(
            f"Expected {factory}() in {path.name} to build an nn.Module, got "
            f"{'None' if module is None else 'a ' + type(module).__name__}; return the "
            "network (e.g. nn.Sequential(...)) from the factory"
        )
    if declared is None:
        declared = _attribute(module, "preprocessing")
        where = f"module.preprocessing of {factory}() in {path.name}"
    return module, source, declared_preprocessing(declared, where)


def _attribute(module: torch.nn.Module, name: str):
    """A plain attribute the user set on the module (a declaration), or ``None``: a submodule
    or a method of that name is part of the network, not a declaration."""
    value = getattr(module, name, None)
    return None if isinstance(value, torch.nn.Module) or callable(value) else value


def declared_token_layers(module: torch.nn.Module, layers: list[str], where: str) -> list[str]:
    """The layers ``module.token_layers`` names (their 3-d outputs are (B, T, C) tokens).

    Parameters
    ----------
    module : torch.nn.Module
        The user's network.
    layers : list of str
        Its layer names.
    where : str
        For the message (e.g. ``"build() in net.py"``).

    Returns
    -------
    list of str

    Raises
    ------
    InputError
        For a value that is not a list of layer names, or a name that is not a layer.
    """
    value = _attribute(module, "token_layers")
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)) or \
            not all(isinstance(v, str) for v in value):
        raise InputError(f"Expected module.token_layers of {where} to be a list of layer "
                         f"names, got {value!r}; e.g. module.token_layers = ['encoder']")
    for layer in value:
        if layer not in layers:
            raise InputError(
                f"Expected module.token_layers of {where} to name layers of the module, got "
                f"{layer!r}{suggest(layer, layers)} (layers: {', '.join(layers[:8])}"
                f"{' ...' if len(layers) > 8 else ''})"
            )
    return list(value)


@register_backend("torch")
def _torch(name):
    arg = name.arg if name.size is None else f"{name.arg}@{name.size}"
    file, _, rest = arg.partition(":")
    factory, _, ckpt = rest.partition("@")
    path = Path(file)
    if not path.is_file() or not factory:
        why = ("no factory named" if not factory and path.is_file() else
               f"{path} is a folder" if path.is_dir() else f"no file {path}")
        raise InputError(
            f"Expected torch:<file.py>:<factory>[@<checkpoint>], got torch:{arg} ({why}); the "
            "file must exist and define a function returning an nn.Module"
        )
    module, source, declared = build_user_module(path, factory)
    if ckpt:
        ckpt_path = Path(ckpt)
        state, steps = read_checkpoint(ckpt_path)
        state, removed = fit_state_dict(state, module.state_dict().keys())
        if steps or removed:
            note(f"checkpoint {ckpt_path.name}: {' and '.join(steps + removed)}")
        load_into(module, state, f"{factory}()", ckpt_path)
    layers = [*(n for n, _ in module.named_children()), "output"]
    tokens = declared_token_layers(module, layers, f"{factory}() in {path.name}")
    return UserModuleBackend(f"torch:{arg}", module, source=source, preprocessing=declared,
                             token_layers=tokens)
