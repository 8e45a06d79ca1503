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
import pickle
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
        try:
            if not meta.is_file() or not npy.is_file():
                return None
        except OSError:  # e.g. the cache folder is a file
            return None
        try:
            info = json.loads(meta.read_text())
            if not isinstance(info, dict):
                raise ValueError(f"its record is a JSON {type(info).__name__}, not an object")
            if not isinstance(info.get("sha256"), str) or not isinstance(info.get("shape"), list):
                raise ValueError("its record lacks the array's sha256 and shape")
            arr = np.load(npy, allow_pickle=False)
            if not isinstance(arr, np.ndarray):
                arr.close()
                raise ValueError("the .npy holds no array")
            if _digest(arr) != info["sha256"] or list(arr.shape) != info["shape"]:
                raise ValueError("checksum mismatch")
            return arr
        except (ValueError, OSError, KeyError, EOFError, TypeError, MemoryError,
                pickle.UnpicklingError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            warnings.warn(f"feature cache entry {npy.name} is corrupt ({first}); recomputing",
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
        try:
            self._write(key, array, info)
        except OSError as exc:
            warnings.warn(f"feature cache {self.root} is not writable ({exc}); the features are "
                          "not cached: pass another cache folder (--cache-dir)", stacklevel=2)

    def _write(self, key: str, array: np.ndarray, info: dict | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        npy, meta = self._paths(key)
        array = np.ascontiguousarray(array)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
            os.replace(tmp, npy)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        record = {"sha256": _digest(array), "shape": list(array.shape),
                  "dtype": str(array.dtype), **(info or {})}
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".json.tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh)
            os.replace(tmp, meta)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
