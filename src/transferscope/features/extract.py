"""Batched feature extraction from chosen layers, through the cache."""

from __future__ import annotations

import sys
import time

import numpy as np

from transferscope.backends import Backend, create_backend
from transferscope.data import Dataset
from transferscope.errors import InputError
from transferscope.features.cache import FeatureCache, cache_key


def check_extracted(x, model: str, layer: str, n: int) -> None:
    """Refuse features that are not an (n, D >= 1) array of finite numbers (one-line error).

    Parameters
    ----------
    x : ndarray or None
        What the backend returned for ``layer``.
    model, layer : str
        Named in the message.
    n : int
        The number of samples.

    Raises
    ------
    InputError
        For a missing layer, another shape, or NaN/inf values (e.g. NaN weights in a
        checkpoint, or activations that overflow).
    """
    where = f"model {model!r} at layer {layer!r}"
    if x is None or np.ndim(x) != 2 or x.shape[0] != n or x.shape[1] < 1:
        got = "none" if x is None else f"shape {np.shape(x)}"
        raise InputError(f"Expected features of shape ({n}, D) from {where}, got {got}; pick "
                         "another layer (--layer)")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise InputError(
            f"Expected finite features from {where}, got NaN or inf for {int(bad.sum())} of {n} "
            "samples; check the model's weights (checkpoint) and that the inputs are on the "
            "scale it expects"
        )


class ProgressBar:
    """A minimal stderr progress line (items, rate, ETA); silent when not a terminal."""

    def __init__(self, label: str, enabled: bool | None = None):
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        """Redraw the line after ``done`` of ``total`` items (ending it when all are done)."""
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{self.label}: {done}/{total} ({rate:.0f}/s, ETA {eta:.0f}s)"
                         + end)
        sys.stderr.flush()


def extract_features(model, data: Dataset, layers=None, *, cache: FeatureCache | None = None,
                     batch_size: int = 64, device: str | None = None,
                     progress: bool | None = None) -> dict[str, np.ndarray]:
    """Features of ``data`` from ``layers`` (default: the model's penultimate layer).

    Layers already in the cache are read (and verified) without a forward pass; the rest are
    computed in one pass and stored.

    Parameters
    ----------
    model : str or Backend
        A model name or a built backend.
    data : Dataset
        N samples of a kind the model takes.
    layers : list of str, optional
        Layer names (default: ``[backend.default_layer()]``).
    cache : FeatureCache, optional
        Where features are cached (default: ``FeatureCache()`` at :func:`default_cache_dir`).
    batch_size : int
        Samples per forward pass.
    device : str, optional
        Torch device (default: CUDA when available).
    progress : bool, optional
        Show a progress line on stderr (default: when stderr is a terminal).

    Returns
    -------
    dict of str to ndarray of shape (N, D_layer)
        The features of every requested layer, rows in the dataset's order.
    """
    backend = model if isinstance(model, Backend) else create_backend(model)
    backend.check_input(data)
    layers = list(layers or [backend.default_layer()])
    backend.check_layers(layers)
    cache = cache if cache is not None else FeatureCache()
    identity, fingerprint = backend.identity(), data.fingerprint
    keys = {layer: cache_key(identity, layer, fingerprint) for layer in layers}
    out = {}
    for layer in layers:
        hit = cache.get(keys[layer])
        if hit is not None:
            out[layer] = hit
    todo = [layer for layer in layers if layer not in out]
    if todo:
        feats = backend.features(data, todo, batch_size=batch_size, device=device,
                                 progress=ProgressBar(f"{backend.name} on {data.name}",
                                                      progress))
        for layer in todo:
            check_extracted(feats.get(layer), backend.name, layer, len(data))
            cache.put(keys[layer], feats[layer],
                      {"model": backend.name, "layer": layer, "dataset": data.name})
            out[layer] = feats[layer]
    return out


def logits_to_probs(x: np.ndarray) -> np.ndarray:
    """Class probabilities from a head's outputs: rows that already are probabilities
    (non-negative, summing to 1 within 1e-4) are kept, anything else is taken as logits and
    soft-maxed (in float64, max-shifted).

    Parameters
    ----------
    x : ndarray of shape (N, C)
        Logits or probabilities of the source model's C classes.

    Returns
    -------
    ndarray of shape (N, C), float64
        Rows summing to 1.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size and (x >= 0).all() and np.allclose(x.sum(axis=1), 1.0, atol=1e-4):
        return x / x.sum(axis=1, keepdims=True)
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def extract_source_probs(model, data: Dataset, *, cache: FeatureCache | None = None,
                         batch_size: int = 64, device: str | None = None,
                         progress: bool | None = None) -> np.ndarray | None:
    """The source model's class probabilities on ``data`` (what LEEP and NCE score), read from
    its head layer (:meth:`~transferscope.backends.Backend.head_layer`) through the cache.

    Parameters
    ----------
    model : str or Backend
        A model name or a built backend.
    data : Dataset
        N samples of a kind the model takes.
    cache, batch_size, device, progress
        As for :func:`extract_features`.

    Returns
    -------
    ndarray of shape (N, C_source) or None
        Rows summing to 1 (:func:`logits_to_probs`); ``None`` for a model without a classifier
        head.

    Raises
    ------
    InputError
        When the head gives fewer than 2 classes (not a classifier's output).
    """
    backend = model if isinstance(model, Backend) else create_backend(model)
    head = backend.head_layer()
    if head is None:
        return None
    x = extract_features(backend, data, [head], cache=cache, batch_size=batch_size,
                         device=device, progress=progress)[head]
    if x.shape[1] < 2:
        raise InputError(
            f"Expected class logits of shape ({len(data)}, C >= 2) from the head of model "
            f"{backend.name!r} (layer {head!r}), got shape {x.shape}; source-probability "
            "metrics (leep, nce) need a classifier's output: use feature metrics for it"
        )
    return logits_to_probs(x)
