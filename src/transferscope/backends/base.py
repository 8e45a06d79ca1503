"""The one small interface every model backend offers, and the name registry.

A backend can load its model, tell its preprocessing, list its layers, and return features of
a :class:`~transferscope.data.Dataset` from chosen layers. The rest of the package never asks
which backend it has. Names follow one grammar, ``<backend>:<argument>`` (``raw`` alone).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from transferscope.data import Dataset
from transferscope.errors import InputError
from transferscope.metrics._registry import suggest

_BACKENDS: dict[str, Callable[[str], Backend]] = {}


def register_backend(prefix: str):
    """Register ``factory(argument) -> Backend`` for names ``<prefix>:<argument>``."""

    def decorate(factory):
        if prefix in _BACKENDS:
            raise ValueError(f"backend {prefix!r} registered twice")
        _BACKENDS[prefix] = factory
        return factory

    return decorate


def list_backends() -> list[str]:
    return sorted(_BACKENDS)


def create_backend(name: str) -> Backend:
    """Parse ``name`` and build its backend (nothing is downloaded)."""
    prefix, _, arg = name.partition(":")
    if prefix not in _BACKENDS:
        raise InputError(
            f"Unknown model {name!r}{suggest(prefix, _BACKENDS)}; names look like "
            f"<backend>:<model> with backend one of {', '.join(list_backends())}"
        )
    return _BACKENDS[prefix](arg)


def weights_digest(state: dict) -> str:
    """SHA-256 (16 hex) of a state dict's names, shapes and values, in key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key]
        a = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
        h.update(key.encode() + str(a.shape).encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


class Backend(ABC):
    """A model that turns a dataset into features."""

    name: str
    modalities: tuple[str, ...]  # dataset kinds it accepts

    def check_input(self, data: Dataset) -> None:
        if data.kind not in self.modalities:
            raise InputError(
                f"Model {self.name!r} takes {' or '.join(self.modalities)} inputs, got a "
                f"{data.kind} dataset ({data.name}); pick a model for {data.kind} data"
            )

    @abstractmethod
    def layers(self) -> list[str]:
        """Names of the layers features can be taken from, input to output."""

    @abstractmethod
    def default_layer(self) -> str:
        """The penultimate representation (what a new head would sit on)."""

    @abstractmethod
    def identity(self) -> str:
        """Everything that determines the features: architecture, weights digest, preprocessing."""

    @abstractmethod
    def features(self, data: Dataset, layers: list[str], *, batch_size: int = 64,
                 device: str | None = None, progress=None) -> dict[str, np.ndarray]:
        """Pooled features (N, D_layer) of every sample, for each requested layer."""

    def check_layers(self, layers: list[str]) -> None:
        known = self.layers()
        for layer in layers:
            if layer not in known:
                raise InputError(
                    f"Model {self.name!r} has no layer {layer!r}{suggest(layer, known)} "
                    f"(layers: {', '.join(known[:8])}{' ...' if len(known) > 8 else ''})"
                )
