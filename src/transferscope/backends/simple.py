"""The baselines: ``raw`` (the input itself) and ``random:<model>`` (the from-scratch twin),
and ``torch:<file.py>:<factory>[@<checkpoint>]`` for any user-written module."""

from __future__ import annotations

import copy
import importlib.util
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
from transferscope.errors import InputError

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
        raise InputError(f"Expected a model with weights after 'random:', got {inner.name!r}")
    # a seed derived from the pretrained weights: the same twin wherever the model lives on
    # disk, and unlike the small seeds (0, 42, ...) a module may itself be initialised with
    seed = int(weights_digest(inner.module.state_dict())[:8], 16)
    twin = copy.copy(inner)
    twin.module = reinitialise(copy.deepcopy(inner.module), seed)
    twin.name = f"random:{inner.name}"
    twin._digest = None
    return twin


def load_checkpoint(path: Path) -> dict:
    """Weights only: safetensors, or torch.load(weights_only=True) - never arbitrary pickles."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


class UserModuleBackend(TorchModuleBackend):
    """A module from the user's own file; layers are its direct children."""

    def __init__(self, name: str, module: torch.nn.Module):
        children = [n for n, _ in module.named_children()]
        super().__init__(name, module, block_names=children,
                         default=children[-2] if len(children) > 1 else "output")


@register_backend("torch")
def _torch(name):
    arg = name.arg if name.size is None else f"{name.arg}@{name.size}"
    file, _, rest = arg.partition(":")
    factory, _, ckpt = rest.partition("@")
    path = Path(file)
    if not path.is_file() or not factory:
        raise InputError(
            f"Expected torch:<file.py>:<factory>[@<checkpoint>], got torch:{arg}; the file must "
            "exist and define a function returning an nn.Module"
        )
    spec = importlib.util.spec_from_file_location(f"tscope_user_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # the user's own code, by the user's own request
    if not hasattr(mod, factory):
        raise InputError(f"Expected a function {factory!r} in {path.name}, got none")
    module = getattr(mod, factory)()
    if ckpt:
        state = load_checkpoint(Path(ckpt))
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InputError(
                f"Expected checkpoint {Path(ckpt).name} to fit {factory}(), got missing keys "
                f"{list(missing)[:3]} and unexpected keys {list(unexpected)[:3]}"
            )
    return UserModuleBackend(f"torch:{arg}", module)
