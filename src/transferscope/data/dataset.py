"""The target task: inputs, labels and a content fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from transferscope.errors import InputError

KINDS = ("image", "text", "array", "series")
TASKS = ("classification", "regression")


@dataclass
class Dataset:
    """A labelled target dataset.

    inputs : images as an array (N, H, W) or (N, H, W, C) (uint8 or float in [0, 1]), or a list of
        such arrays when sizes differ; texts as a list of str; arrays as (N, D); time series as
        (N, channels, length).
    labels : (N,) original label values (ints or strings); for a regression dataset the float64
        targets (as ``logme(features, targets, regression=True)`` takes them).
    kind : one of "image", "text", "array", "series" - what a model backend must accept.
    task : "classification" (the default: labels are classes) or "regression" (labels are real
        targets; classification commands - rank, layers, finetune, per-class subsampling and
        stratified splits - refuse it, see :meth:`require_classes`).
    """

    name: str
    kind: str
    inputs: object
    labels: np.ndarray
    meta: dict = field(default_factory=dict)
    task: str = "classification"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"Expected a dataset kind among {', '.join(KINDS)}, got "
                             f"{self.kind!r}")
        if self.task not in TASKS:
            raise InputError(f"Expected a dataset task among {', '.join(TASKS)}, got "
                             f"{self.task!r}")
        self.labels = np.asarray(self.labels)
        if self.labels.ndim != 1:
            raise InputError(f"Expected labels of shape (N,) for {self.name}, got shape "
                             f"{self.labels.shape}")
        if self.task == "regression":
            try:
                self.labels = self.labels.astype(np.float64)
            except (TypeError, ValueError):
                raise InputError(f"Expected numeric regression targets for {self.name}, got "
                                 f"labels of dtype {self.labels.dtype}; pass float targets or "
                                 "task='classification'") from None
            if not np.isfinite(self.labels).all():
                raise InputError(f"Expected finite regression targets for {self.name}, got "
                                 f"{int((~np.isfinite(self.labels)).sum())} NaN/Inf; drop or "
                                 "impute those samples")
        try:
            n = len(self.inputs)
        except TypeError:
            raise InputError(f"Expected a sequence of inputs for {self.name}, got "
                             f"{type(self.inputs).__name__}") from None
        if n != len(self.labels):
            raise InputError(
                f"Expected one label per input in {self.name}, got {n} inputs but "
                f"{len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> np.ndarray:
        """The distinct label values, sorted: array of shape (n_classes,).

        Raises
        ------
        InputError
            For a regression dataset (its targets are not classes).
        """
        self.require_classes("class labels")
        return np.unique(self.labels)

    def require_classes(self, what: str) -> None:
        """Refuse a regression dataset where class labels are needed.

        Parameters
        ----------
        what : str
            What needs the classes (``"tscope rank"``, ``"a stratified split"``), named in the
            error.

        Raises
        ------
        InputError
            When :attr:`task` is ``"regression"``.
        """
        if self.task == "regression":
            raise InputError(
                f"Expected a classification dataset for {what}, got {self.name}, a regression "
                f"dataset ({len(self.labels)} real-valued targets); rank, layers and finetune "
                "need class labels: score its features with logme(features, targets, "
                "regression=True), or bin the targets into classes"
            )

    def subset(self, indices) -> Dataset:
        """The samples at ``indices``, in that order, as a new dataset.

        Parameters
        ----------
        indices : array-like of int, shape (M,)
            Positions of the samples to keep (repeats allowed).

        Returns
        -------
        Dataset
            M samples, with the same name, kind and task and a copy of :attr:`meta`.
        """
        idx = np.asarray(indices, dtype=np.int64)
        if hasattr(self.inputs, "subset"):  # lazy inputs stay lazy (data.stream.LazyImages)
            inputs = self.inputs.subset(idx)
        elif isinstance(self.inputs, np.ndarray):
            inputs = self.inputs[idx]
        else:
            inputs = [self.inputs[i] for i in idx]
        return Dataset(self.name, self.kind, inputs, self.labels[idx], dict(self.meta),
                       self.task)

    @property
    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of the kind, every input's bytes and every label, in order.

        Read in pieces (arrays and memmaps by chunks of rows, lazily decoded images one at a
        time), so it never copies the whole input; lazy inputs remember it.
        """
        # a regression dataset's task enters the hash; classification ones stay as they were
        kind = self.kind if self.task == "classification" else f"{self.kind}:{self.task}"
        cached = getattr(self.inputs, "fingerprints", None)
        if cached is None:
            return fingerprint_of(kind, self.inputs, self.labels)
        key = (kind, hashlib.sha256(np.asarray(self.labels).astype(str).tobytes())
               .hexdigest())
        if key not in cached:
            cached[key] = fingerprint_of(kind, self.inputs, self.labels)
        return cached[key]


def digest_inputs(h, inputs) -> None:
    """Feed ``h`` a dataset's inputs as :attr:`Dataset.fingerprint` defines it, without copying
    the whole of them: a numeric array (a memmap too) in chunks of rows, lazy inputs through
    their own ``update_digest``, anything else item by item."""
    if hasattr(inputs, "update_digest"):
        inputs.update_digest(h)
    elif isinstance(inputs, np.ndarray) and inputs.dtype != object:
        h.update(str(inputs.shape).encode() + str(inputs.dtype).encode())
        rows = max(1, (64 << 20) // max(1, inputs[:1].nbytes))  # about 64 MiB at a time
        for i in range(0, len(inputs), rows):
            h.update(np.ascontiguousarray(inputs[i : i + rows]).tobytes())
    else:
        for item in inputs:
            if isinstance(item, str):
                b = item.encode("utf-8")
            else:
                a = np.ascontiguousarray(item)
                b = str(a.shape).encode() + str(a.dtype).encode() + a.tobytes()
            h.update(len(b).to_bytes(8, "little") + b)


def fingerprint_of(kind: str, inputs, labels) -> str:
    """16 hex digits of the SHA-256 of ``kind``, ``inputs`` (:func:`digest_inputs`) and the
    labels: what :attr:`Dataset.fingerprint` returns."""
    h = hashlib.sha256(kind.encode())
    digest_inputs(h, inputs)
    h.update(np.asarray(labels).astype(str).tobytes())
    return h.hexdigest()[:16]
