"""The baselines: ``raw`` (the input itself) and ``random:<model>`` (the from-scratch twin),
and ``torch:<file.py>:<factory>[@<checkpoint>]`` for any user-written module."""

from __future__ import annotations

import copy
import hashlib
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import torch

from transferscope.backends.base import (
    Backend,
    FinetunableBackend,
    register_backend,
    weights_digest,
)
from transferscope.backends.torch_module import TorchModuleBackend, reinitialise
from transferscope.errors import InputError, first_line
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
        checkpoint is taken out.

    Raises
    ------
    InputError
        For a missing file, a file that does not read as a checkpoint (random bytes, truncated),
        a pickle that is not weights-only (nothing of it runs), or a content other than named
        tensors.
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


def _state_dict(state, path: Path) -> dict:
    """``state`` checked to be named tensors (a nested training-checkpoint entry taken out)."""
    if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        nested = [k for k in NESTED_STATE_KEYS if isinstance(state.get(k), dict)]
        if nested:
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
    return state


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
    """

    def __init__(self, name: str, module: torch.nn.Module, source: str | None = None):
        children = [n for n, _ in module.named_children()]
        super().__init__(name, module, block_names=children,
                         default=children[-2] if len(children) > 1 else "output",
                         source=source)


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
        The name of a function in it that returns the network.

    Returns
    -------
    tuple of (torch.nn.Module, str)
        The network and the file's source code.
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
    if not isinstance(module, torch.nn.Module):
        raise InputError(
            f"Expected {factory}() in {path.name} to build an nn.Module, got "
            f"{'None' if module is None else 'a ' + type(module).__name__}; return the "
            "network (e.g. nn.Sequential(...)) from the factory"
        )
    return module, source


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
    module, source = build_user_module(path, factory)
    if ckpt:
        state = load_checkpoint(Path(ckpt))
        load_into(module, state, f"{factory}()", Path(ckpt))
    return UserModuleBackend(f"torch:{arg}", module, source=source)
