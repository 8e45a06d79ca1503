"""The target task: inputs, labels and a content fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from transferscope.errors import InputError

KINDS = ("image", "text", "array", "series")


@dataclass
class Dataset:
    """A labelled target dataset.

    inputs : images as an array (N, H, W) or (N, H, W, C) (uint8 or float in [0, 1]), or a list of
        such arrays when sizes differ; texts as a list of str; arrays as (N, D); time series as
        (N, channels, length).
    labels : (N,) original label values (ints or strings).
    kind : one of "image", "text", "array", "series" - what a model backend must accept.
    """

    name: str
    kind: str
    inputs: object
    labels: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"Expected a dataset kind among {', '.join(KINDS)}, got "
                             f"{self.kind!r}")
        self.labels = np.asarray(self.labels)
        if self.labels.ndim != 1:
            raise InputError(f"Expected labels of shape (N,) for {self.name}, got shape "
                             f"{self.labels.shape}")
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
        """The distinct label values, sorted: array of shape (n_classes,)."""
        return np.unique(self.labels)

    def subset(self, indices) -> Dataset:
        """The samples at ``indices``, in that order, as a new dataset.

        Parameters
        ----------
        indices : array-like of int, shape (M,)
            Positions of the samples to keep (repeats allowed).

        Returns
        -------
        Dataset
            M samples, with the same name and kind and a copy of :attr:`meta`.
        """
        idx = np.asarray(indices, dtype=np.int64)
        if isinstance(self.inputs, np.ndarray):
            inputs = self.inputs[idx]
        else:
            inputs = [self.inputs[i] for i in idx]
        return Dataset(self.name, self.kind, inputs, self.labels[idx], dict(self.meta))

    @property
    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of the kind, every input's bytes and every label, in order."""
        h = hashlib.sha256(self.kind.encode())
        if isinstance(self.inputs, np.ndarray) and self.inputs.dtype != object:
            h.update(str(self.inputs.shape).encode() + str(self.inputs.dtype).encode())
            h.update(np.ascontiguousarray(self.inputs).tobytes())
        else:
            for item in self.inputs:
                if isinstance(item, str):
                    b = item.encode("utf-8")
                else:
                    a = np.ascontiguousarray(item)
                    b = str(a.shape).encode() + str(a.dtype).encode() + a.tobytes()
                h.update(len(b).to_bytes(8, "little") + b)
        h.update(np.asarray(self.labels).astype(str).tobytes())
        return h.hexdigest()[:16]
