"""The backend contract every model offers, its preprocessing config, and the name registry.

A :class:`Backend` turns a :class:`~transferscope.data.Dataset` into features from chosen
layers; a :class:`FinetunableBackend` also hands its weights to fine-tuning (``module``,
``prepare``, ``feature_fn``, ``blocks``, ``truncate``). The rest of the package never asks
which backend it has. Names follow the grammar of :mod:`transferscope.names`; a backend
registers a factory ``factory(name: ModelName) -> Backend`` under its prefix in
:data:`BACKENDS`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass

import numpy as np

from transferscope.data import Dataset
from transferscope.errors import InputError
from transferscope.names import ModelName, parse_model_name
from transferscope.registry import Registry, suggest

BACKENDS = Registry("backend", "backends")


def register_backend(prefix: str):
    """Decorator: register ``factory(name: ModelName) -> Backend`` for ``<prefix>:<arg>``."""
    return BACKENDS.register(prefix)


def list_backends() -> list[str]:
    """Registered backend prefixes, sorted (``random`` included: it wraps any of them)."""
    return sorted([*BACKENDS.names(), "random"])


def check_model_name(text: str, *, extra: tuple[str, ...] = ()) -> ModelName:
    """Parse ``text`` and check that its backend exists, without loading anything.

    Parameters
    ----------
    text : str
        A model name.
    extra : tuple of str
        Further accepted prefixes (a study accepts ``pretrained``).

    Returns
    -------
    ModelName

    Raises
    ------
    InputError
        For a malformed name or an unknown backend (with a did-you-mean).
    """
    name = parse_model_name(text)
    if name.backend not in BACKENDS and name.backend not in extra:
        kinds = [*BACKENDS.names(), "random", *extra]
        raise InputError(
            f"Unknown model {text!r}{suggest(name.backend, kinds)}; names look like "
            f"<backend>:<model> with backend one of {', '.join(sorted(kinds))}"
        )
    return name


def create_backend(name: str, *, preprocessing: dict | None = None) -> Backend:
    """Build the backend a model name describes (nothing is downloaded).

    Parameters
    ----------
    name : str
        A model name (see :mod:`transferscope.names`); ``random:<model>`` builds the model and
        its random-init twin.
    preprocessing : dict, optional
        Overrides of the model's declared :class:`Preprocessing` (``size``, ``mean``, ``std``,
        ...; the CLI's ``--input-size``, ``--mean``, ``--std``); see
        :meth:`FinetunableBackend.with_preprocessing`.

    Returns
    -------
    Backend
    """
    parsed = check_model_name(name)
    if parsed.random:
        from transferscope.backends.simple import random_twin

        inner = create_backend(parsed.inner.text, preprocessing=preprocessing)
        module = getattr(inner, "module", None)
        if module is not None and next(module.parameters(), None) is None:
            raise InputError(
                f"Expected a model with weights after 'random:', got {inner.name!r}, which has "
                "no parameters (its random twin would be the model itself); rank it without "
                "'random:'"
            )
        return random_twin(inner)
    backend = BACKENDS.get(parsed.backend)(parsed)
    if preprocessing:
        if not isinstance(backend, FinetunableBackend):
            raise InputError(f"Expected a model with declared preprocessing for "
                             f"{', '.join(preprocessing)}, got {backend.name!r}, which has "
                             "none; drop --input-size/--mean/--std for it")
        backend = backend.with_preprocessing(**preprocessing)
    return backend


def require_finetunable(backend: Backend) -> FinetunableBackend:
    """``backend`` if its weights can train, else a one-line :class:`InputError`."""
    if not isinstance(backend, FinetunableBackend):
        raise InputError(f"Expected a model whose weights can train, got {backend.name!r}; "
                         "effnet-lite, hf:, torch:, timm: and torchvision: models can be "
                         "fine-tuned")
    return backend


def weights_digest(state: dict) -> str:
    """SHA-256 (16 hex) of a state dict's names, shapes and values, in key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key]
        a = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
        h.update(key.encode() + str(a.shape).encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Preprocessing:
    """How inputs become a model's tensors; travels with the weights (timm's ``PretrainedCfg``).

    Attributes
    ----------
    size : int or None
        Square input size in pixels (images); ``None`` for inputs used as they are.
    mean, std : tuple of float
        Per-channel normalisation of pixels scaled to [0, 1].
    interpolation : str
        Resize mode (``"bilinear"``, ``"bicubic"``, ...), antialiased.
    crop_pct : float
        Resize to ``size / crop_pct`` and take the centre ``size`` crop; 1.0 resizes to
        ``size`` directly.
    layout : str
        Tensor layout the module takes (``"NCHW"`` images, ``"NCL"`` series, ``"ND"`` arrays).
    """

    size: int | None = None
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    layout: str = "NCHW"

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.size is not None and int(self.size) < 1:
            raise InputError(f"Expected an input size >= 1, got {self.size}")
        if not 0 < self.crop_pct <= 1:
            raise InputError(f"Expected 0 < crop_pct <= 1, got {self.crop_pct}")

    def digest(self) -> str:
        """8 hex digits identifying this preprocessing (part of a model's identity)."""
        return hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:8]


class Backend(ABC):
    """A model that turns a dataset into features.

    Attributes
    ----------
    name : str
        The model name it was built from.
    modalities : tuple of str
        Dataset kinds it accepts (``"image"``, ``"text"``, ``"array"``, ``"series"``).
    """

    name: str
    modalities: tuple[str, ...]

    def check_input(self, data: Dataset) -> None:
        """Refuse a dataset of a kind this model does not take (one-line error)."""
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

    def head_layer(self) -> str | None:
        """The layer whose features are the source model's class logits (or probabilities),
        or ``None`` for a model without a classifier head.

        Source-probability metrics (LEEP, NCE) read it through
        :func:`transferscope.features.extract_source_probs`.
        """
        return None

    @abstractmethod
    def features(self, data: Dataset, layers: list[str], *, batch_size: int = 64,
                 device: str | None = None, progress=None) -> dict[str, np.ndarray]:
        """Pooled features of every sample for each requested layer.

        Parameters
        ----------
        data : Dataset
            N samples of a kind in :attr:`modalities`.
        layers : list of str
            Names from :meth:`layers`.
        batch_size : int
            Samples per forward pass.
        device : str, optional
            Torch device (default: CUDA when available).
        progress : callable, optional
            Called as ``progress(done, total)`` after each batch.

        Returns
        -------
        dict of str to ndarray of shape (N, D_layer)
        """

    def iter_features(self, data: Dataset, layers: list[str], *, batch_size: int = 64,
                      device: str | None = None, num_workers: int = 0,
                      precision: str = "fp32"):
        """Pooled features batch by batch, as they are computed (what the feature cache writes
        as it goes). This default computes :meth:`features` and gives it as one chunk;
        backends that run a network yield each batch.

        Parameters
        ----------
        data : Dataset
            N samples of a kind in :attr:`modalities`.
        layers : list of str
            Names from :meth:`layers`.
        batch_size : int
            Samples per forward pass.
        device : str, optional
            Torch device (default: CUDA when available).
        num_workers : int
            Loader processes that read and prepare batches (0: this process).
        precision : str
            ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"``
            (:func:`transferscope.precision.resolve_precision`).

        Yields
        ------
        tuple of (slice or ndarray of int, dict of str to ndarray of shape (B, D_layer))
            The rows of the dataset a chunk holds, and each layer's float32 features of them.
        """
        yield slice(0, len(data)), self.features(data, layers, batch_size=batch_size,
                                                 device=device)

    def check_layers(self, layers: list[str]) -> None:
        """Refuse layer names the model does not have (did-you-mean)."""
        known = self.layers()
        for layer in layers:
            if layer not in known:
                raise InputError(
                    f"Model {self.name!r} has no layer {layer!r}{suggest(layer, known)} "
                    f"(layers: {', '.join(known[:8])}{' ...' if len(known) > 8 else ''})"
                )


def collect_features(chunks, n: int, progress=None) -> dict[str, np.ndarray]:
    """The (N, D) arrays of :meth:`Backend.iter_features` chunks, rows in the dataset's order.

    Parameters
    ----------
    chunks : iterable of (rows, dict of str to ndarray of shape (B, D_layer))
        What ``iter_features`` yields (``rows``: a slice or an index array).
    n : int
        The number of samples.
    progress : callable, optional
        Called as ``progress(done, n)`` after each chunk.

    Returns
    -------
    dict of str to ndarray of shape (N, D_layer)
    """
    out: dict[str, np.ndarray] = {}
    done = 0
    for rows, values in chunks:
        for layer, v in values.items():
            if layer not in out:
                out[layer] = np.empty((n, *v.shape[1:]), v.dtype)
            out[layer][rows] = v
        done += len(range(n)[rows]) if isinstance(rows, slice) else len(rows)
        if progress is not None:
            progress(done, n)
    return out


class FinetunableBackend(Backend):
    """A backend whose weights can train: what :class:`~transferscope.finetune.TransferModel`
    needs, besides features.

    Attributes
    ----------
    module : torch.nn.Module
        The pretrained network (never changed: fine-tuning trains a deep copy).
    preprocessing : Preprocessing or None
        How inputs are prepared (``None`` where a processor/tokenizer of the model decides).
    """

    module: object
    preprocessing: Preprocessing | None = None
    #: whether :meth:`with_preprocessing` applies (False where a processor decides)
    accepts_preprocessing: bool = True

    @abstractmethod
    def prepare(self, batch, data: Dataset):
        """Model-ready tensor of a batch of raw inputs, shape (B, ...)."""

    @abstractmethod
    def feature_fn(self, module, layer: str, *, cut: bool = False):
        """``x -> (B, D)``: differentiable pooled features of ``module`` (a copy of
        :attr:`module`) at ``layer``; with ``cut`` the forward pass stops at the layer."""

    @abstractmethod
    def blocks(self, module, layer: str) -> list[tuple[str, object]]:
        """``(name, block)`` pairs in forward order up to ``layer`` (what freezing and
        layer-wise learning rates act on); blocks without parameters are left out."""

    @abstractmethod
    def truncate(self, module, layer: str):
        """Remove the blocks after ``layer`` from ``module`` (in place) and return it."""

    def with_preprocessing(self, **changes) -> FinetunableBackend:
        """A shallow copy whose :attr:`preprocessing` has ``changes`` applied (same weights).

        Parameters
        ----------
        **changes
            :class:`Preprocessing` fields (``size``, ``mean``, ``std``, ``interpolation``,
            ``crop_pct``, ``layout``); a model without a declaration starts from the defaults.

        Returns
        -------
        FinetunableBackend
            The copy; its identity carries the new preprocessing digest.

        Raises
        ------
        InputError
            For a model whose inputs are prepared by its own processor or tokenizer (Hugging
            Face), or an unknown field.
        """
        import copy
        from dataclasses import fields, replace

        known = {f.name for f in fields(Preprocessing)}
        unknown = [k for k in changes if k not in known]
        if unknown:
            raise InputError(f"Expected preprocessing fields among {sorted(known)}, got "
                             f"{unknown}")
        if not self.accepts_preprocessing:
            raise InputError(
                f"Expected a model whose input size and normalisation can be declared, got "
                f"{self.name!r}, which prepares inputs with its own processor or tokenizer; "
                "drop --input-size/--mean/--std for it (edit its preprocessor_config.json)"
            )
        out = copy.copy(self)
        out.preprocessing = replace(self.preprocessing or Preprocessing(), **changes)
        return out

    def architecture(self) -> str:
        """The model without its weights: module class, parameter shapes, preprocessing.

        A from-scratch run does not depend on the pretrained weights, so it is identified by
        this: every source of one architecture shares its scratch baseline.
        """
        shapes = sorted((k, tuple(v.shape)) for k, v in self.module.state_dict().items())
        h = hashlib.sha256(repr(shapes).encode()).hexdigest()[:16]
        rest = [p for p in self.identity().split("|")[1:] if not p.startswith("w=")]
        return "|".join([f"arch={type(self.module).__name__}", f"shapes={h}", *rest])
