"""Batched feature extraction from chosen layers, through the cache."""

from __future__ import annotations

import numpy as np

from transferscope.backends import Backend, create_backend
from transferscope.data import Dataset
from transferscope.errors import InputError
from transferscope.features.cache import FeatureCache, cache_key
from transferscope.progress import override, unit


def check_extracted(x, model: str, layer: str, n: int, *, n_bad: int | None = None) -> None:
    """Refuse features that are not an (n, D >= 1) array of finite numbers (one-line error).

    Parameters
    ----------
    x : ndarray or None
        What the backend returned for ``layer``.
    model, layer : str
        Named in the message.
    n : int
        The number of samples.
    n_bad : int, optional
        The number of samples with NaN or inf features, when counted already (batch by
        batch); ``x`` is not scanned then.

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
    if n_bad is None:
        n_bad = int((~np.isfinite(x).all(axis=1)).sum())
    if n_bad:
        raise InputError(
            f"Expected finite features from {where}, got NaN or inf for {n_bad} of {n} "
            "samples; check the model's weights (checkpoint) and that the inputs are on the "
            "scale it expects"
        )


def _check_chunk(x, model: str, layer: str, rows: int, n: int, width: int | None) -> None:
    """Refuse a batch of features that is not a (rows, D >= 1) array, D the same in every
    batch (the shape message of :func:`check_extracted`)."""
    if (x is None or np.ndim(x) != 2 or x.shape[0] != rows or x.shape[1] < 1
            or (width is not None and x.shape[1] != width)):
        got = "none" if x is None else f"shape {np.shape(x)} for a batch of {rows}"
        raise InputError(f"Expected features of shape ({n}, D) from model {model!r} at layer "
                         f"{layer!r}, got {got}; pick another layer (--layer)")


def _rows(rows) -> int:
    return rows.stop - rows.start if isinstance(rows, slice) else len(rows)


def extract_features(model, data: Dataset, layers=None, *, cache: FeatureCache | None = None,
                     batch_size: int = 64, device: str | None = None,
                     progress: bool | None = None, num_workers: int = 0,
                     precision: str = "auto", mmap: bool = False) -> dict[str, np.ndarray]:
    """Features of ``data`` from ``layers`` (default: the model's penultimate layer).

    Layers already in the cache are read (and verified) without a forward pass; the rest are
    computed in one pass, batch by batch, each batch written into the cache entry as it comes
    (:meth:`FeatureCache.writer`: a memory-mapped ``.npy.tmp`` renamed into place when
    complete), so extraction holds a few batches, not the dataset or its features.

    Parameters
    ----------
    model : str or Backend
        A model name or a built backend.
    data : Dataset
        N samples of a kind the model takes (arrays, memmaps, lists, or lazily decoded images:
        :func:`transferscope.data.stream.open_image_folder`).
    layers : list of str, optional
        Layer names (default: ``[backend.default_layer()]``).
    cache : FeatureCache, optional
        Where features are cached (default: ``FeatureCache()`` at :func:`default_cache_dir`).
    batch_size : int
        Samples per forward pass.
    device : str, optional
        Torch device (default: CUDA when available).
    progress : bool, optional
        Progress of the samples extracted, batch by batch (:mod:`transferscope.progress`: a
        bar on a terminal, log lines elsewhere); ``None`` follows
        :func:`transferscope.progress.configure`, ``False`` / ``True`` turn it off / on for
        this call.
    num_workers : int
        ``DataLoader`` processes that read and prepare batches (0: this process).
    precision : str
        ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :mod:`transferscope.precision`;
        auto is fp32 on the CPU). Features of a precision other than fp32 are cached under
        their own key.
    mmap : bool
        Return read-only memory maps of the cache files instead of arrays in memory (for
        features larger than memory; metrics such as
        :func:`transferscope.metrics.streaming_score` read them in chunks).

    Returns
    -------
    dict of str to ndarray of shape (N, D_layer)
        The features of every requested layer, rows in the dataset's order.

    Raises
    ------
    InputError
        For an unknown layer, a model that does not take the data, precision fp16 off CUDA,
        features of another shape, or NaN/inf features (:func:`check_extracted`).
    """
    from transferscope.backends.base import FinetunableBackend
    from transferscope.backends.torch_module import resolve_device
    from transferscope.data.stream import check_workers
    from transferscope.precision import cache_tag, resolve_precision

    backend = model if isinstance(model, Backend) else create_backend(model)
    backend.check_input(data)
    layers = list(layers or [backend.default_layer()])
    backend.check_layers(layers)
    check_workers(num_workers)
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    cache = cache if cache is not None else FeatureCache()
    identity, fingerprint = backend.identity(), data.fingerprint
    if isinstance(backend, FinetunableBackend):  # a network runs: its precision shapes them
        identity += cache_tag(precision)
    keys = {layer: cache_key(identity, layer, fingerprint) for layer in layers}
    out = {}
    for layer in layers:
        hit = cache.get(keys[layer], mmap=mmap)
        if hit is not None:
            out[layer] = hit
    todo = [layer for layer in layers if layer not in out]
    if not todo:
        return out
    n = len(data)
    with override(progress), unit(f"features {backend.name} on {data.name}", n,
                                  "sample") as bar:
        return _extract(backend, data, todo, keys, cache, out, bar, batch_size=batch_size,
                        device=device, num_workers=num_workers, precision=precision,
                        mmap=mmap)


def _extract(backend, data, todo, keys, cache, out, bar, *, batch_size, device, num_workers,
             precision, mmap) -> dict[str, np.ndarray]:
    """Compute the layers ``todo`` batch by batch into cache writers; ``bar`` counts the
    samples (and batches) done."""
    n = len(data)
    writers = {layer: cache.writer(keys[layer], n, {"model": backend.name, "layer": layer,
                                                    "dataset": data.name})
               for layer in todo}
    bad = dict.fromkeys(todo, 0)
    done = batches = 0
    try:
        for rows, values in backend.iter_features(data, todo, batch_size=batch_size,
                                                  device=device, num_workers=num_workers,
                                                  precision=precision):
            count = _rows(rows)
            for layer in todo:
                x, w = values.get(layer), writers[layer].array
                _check_chunk(x, backend.name, layer, count, n,
                             None if w is None else w.shape[1])
                bad[layer] += int((~np.isfinite(x).all(axis=1)).sum())
                writers[layer].write(rows, x)
            done += count
            batches += 1
            bar.update(count, batches=batches)
        for layer in todo:
            if writers[layer].array is None or done != n:
                got = "none" if writers[layer].array is None else f"{done} rows"
                raise InputError(f"Expected features of shape ({n}, D) from model "
                                 f"{backend.name!r} at layer {layer!r}, got {got}; pick "
                                 "another layer (--layer)")
            if bad[layer]:
                check_extracted(np.full((n, 1), np.nan), backend.name, layer, n,
                                n_bad=bad[layer])
        for layer in todo:
            out[layer] = writers[layer].finish(mmap=mmap)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
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
                         progress: bool | None = None, num_workers: int = 0,
                         precision: str = "auto") -> np.ndarray | None:
    """The source model's class probabilities on ``data`` (what LEEP and NCE score), read from
    its head layer (:meth:`~transferscope.backends.Backend.head_layer`) through the cache.

    Parameters
    ----------
    model : str or Backend
        A model name or a built backend.
    data : Dataset
        N samples of a kind the model takes.
    cache, batch_size, device, progress, num_workers, precision
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
                         device=device, progress=progress, num_workers=num_workers,
                         precision=precision)[head]
    if x.shape[1] < 2:
        raise InputError(
            f"Expected class logits of shape ({len(data)}, C >= 2) from the head of model "
            f"{backend.name!r} (layer {head!r}), got shape {x.shape}; source-probability "
            "metrics (leep, nce) need a classifier's output: use feature metrics for it"
        )
    return logits_to_probs(x)
