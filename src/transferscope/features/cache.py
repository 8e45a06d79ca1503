"""Content-addressed, verified on-disk cache of feature arrays.

Key: SHA-256 of (model identity incl. weights digest and preprocessing, layer, dataset
fingerprint, cache format version). Each entry is ``<key>.npy`` plus ``<key>.json`` holding the
array's SHA-256, shape and dtype; both are written to temporary files and renamed into place
(atomic on POSIX), the JSON last, so a reader sees either a complete entry or none. A read
re-hashes the array; a corrupt or truncated entry is reported with a warning and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """Where cached features live by default.

    Returns
    -------
    Path
        ``$TSCOPE_CACHE`` if set, else ``$XDG_CACHE_HOME/transferscope/features`` (falling back
        to ``~/.cache/transferscope/features``).
    """
    env = os.environ.get("TSCOPE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "transferscope" / "features"


def cache_key(model_identity: str, layer: str, data_fingerprint: str) -> str:
    """The cache key of one layer's features of one dataset under one model.

    Parameters
    ----------
    model_identity : str
        :meth:`Backend.identity` (architecture, weights digest, preprocessing).
    layer : str
        The layer name.
    data_fingerprint : str
        :attr:`Dataset.fingerprint`.

    Returns
    -------
    str
        32 hex digits of the SHA-256 of these and :data:`FORMAT_VERSION`.
    """
    text = json.dumps([FORMAT_VERSION, model_identity, layer, data_fingerprint])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


class FeatureCache:
    """A folder of verified feature arrays, addressed by :func:`cache_key` (see the module
    docstring for the entry format).

    Parameters
    ----------
    root : str or Path, optional
        The folder (default :func:`default_cache_dir`); created on the first write.
    """

    def __init__(self, root=None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def _paths(self, key: str):
        return self.root / f"{key}.npy", self.root / f"{key}.json"

    def get(self, key: str) -> np.ndarray | None:
        """The array stored under ``key``, verified against its recorded SHA-256 and shape.

        Parameters
        ----------
        key : str
            From :func:`cache_key`.

        Returns
        -------
        ndarray or None
            The stored array (for features, shape (n_samples, n_features)); ``None`` when there is
            no complete entry, or when it is corrupt (with a warning, so the caller recomputes).
        """
        npy, meta = self._paths(key)
        if not meta.exists() or not npy.exists():
            return None
        try:
            info = json.loads(meta.read_text())
            arr = np.load(npy, allow_pickle=False)
            if _digest(arr) != info["sha256"] or list(arr.shape) != info["shape"]:
                raise ValueError("checksum mismatch")
            return arr
        except (ValueError, OSError, KeyError, EOFError) as exc:
            warnings.warn(f"feature cache entry {npy.name} is corrupt ({exc}); recomputing",
                          stacklevel=2)
            return None

    def put(self, key: str, array: np.ndarray, info: dict | None = None) -> None:
        """Store ``array`` under ``key`` atomically: the ``.npy`` first, then its ``.json`` record.

        Parameters
        ----------
        key : str
            From :func:`cache_key`.
        array : ndarray
            The array to store (for features, shape (n_samples, n_features)); saved contiguous,
            without pickles.
        info : dict, optional
            Extra JSON-serialisable fields for the record (model, layer, dataset names).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        npy, meta = self._paths(key)
        array = np.ascontiguousarray(array)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, npy)
        record = {"sha256": _digest(array), "shape": list(array.shape),
                  "dtype": str(array.dtype), **(info or {})}
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".json.tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
        os.replace(tmp, meta)
