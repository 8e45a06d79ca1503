"""Content-addressed, verified on-disk cache of feature arrays.

Key: SHA-256 of (model identity incl. weights digest and preprocessing, layer, dataset
fingerprint, cache format version). Each entry is ``<key>.npy`` plus ``<key>.json`` holding the
array's SHA-256, shape and dtype; both are written to temporary files and renamed into place
(atomic on POSIX), the JSON last, so a reader sees either a complete entry or none. A read
re-hashes the array; a corrupt or truncated entry is reported with a warning and recomputed.

Features can also be written as they are produced (:meth:`FeatureCache.writer`): rows go into
a ``.npy.tmp`` file opened with ``numpy.lib.format.open_memmap``, and only a finished,
hashed file is renamed to ``<key>.npy`` (its record last); an interrupted extraction leaves at
most a ``.npy.tmp`` file, which no read takes for an entry.
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
    """SHA-256 of the array's C-order bytes, read about 64 MiB at a time (a memmap is never
    copied whole)."""
    h = hashlib.sha256()
    if a.ndim == 0 or len(a) == 0:
        h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()
    rows = max(1, (64 << 20) // max(1, a[:1].nbytes))
    for i in range(0, len(a), rows):
        h.update(np.ascontiguousarray(a[i : i + rows]).tobytes())
    return h.hexdigest()


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

    def get(self, key: str, *, mmap: bool = False) -> np.ndarray | None:
        """The array stored under ``key``, verified against its recorded SHA-256 and shape.

        Parameters
        ----------
        key : str
            From :func:`cache_key`.
        mmap : bool
            Return a read-only memory map of the file instead of reading it into memory
            (verified by reading it once in chunks).

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
            arr = np.load(npy, allow_pickle=False, mmap_mode="r" if mmap else None)
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
            self._unwritable(exc)

    def _unwritable(self, exc: OSError) -> None:
        warnings.warn(f"feature cache {self.root} is not writable ({exc}); the features are "
                      "not cached: pass another cache folder (--cache-dir)", stacklevel=3)

    def writer(self, key: str, n_rows: int, info: dict | None = None) -> FeatureWriter:
        """A :class:`FeatureWriter` that stores an (n_rows, D) array under ``key`` batch by
        batch (see the module docstring); use it as a context manager.

        Parameters
        ----------
        key : str
            From :func:`cache_key`.
        n_rows : int
            The number of rows (samples) the entry will have.
        info : dict, optional
            Extra JSON-serialisable fields for the record.

        Returns
        -------
        FeatureWriter
        """
        return FeatureWriter(self, key, n_rows, info)

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
        self._record(key, array.shape, array.dtype, _digest(array), info)

    def _record(self, key: str, shape, dtype, sha256: str, info: dict | None) -> None:
        """Write ``<key>.json`` (atomically) for the ``.npy`` already in place."""
        _, meta = self._paths(key)
        record = {"sha256": sha256, "shape": list(shape), "dtype": str(np.dtype(dtype)),
                  **(info or {})}
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".json.tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh)
            os.replace(tmp, meta)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class FeatureWriter:
    """Rows of one cache entry, written as they come (from :meth:`FeatureCache.writer`).

    The first :meth:`write` opens ``<key>.XXXX.npy.tmp`` as an (n_rows, D) memmap of the
    batch's dtype; :meth:`finish` hashes it in chunks, renames it to ``<key>.npy`` and writes
    the record. Leaving the ``with`` block by an exception (or :meth:`abort`) deletes the
    temporary file: an unfinished entry is never read. When the cache folder cannot be
    written, the rows are kept in memory instead, with the warning :meth:`FeatureCache.put`
    gives.

    Parameters
    ----------
    cache : FeatureCache
    key : str
    n_rows : int
    info : dict, optional
    """

    def __init__(self, cache: FeatureCache, key: str, n_rows: int, info: dict | None = None):
        self.cache, self.key, self.n_rows, self.info = cache, key, int(n_rows), info
        self.array: np.ndarray | None = None
        self.tmp: str | None = None

    def _open(self, width: int, dtype) -> None:
        shape = (self.n_rows, width)
        try:
            self.cache.root.mkdir(parents=True, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(dir=self.cache.root, prefix=f"{self.key}.",
                                            suffix=".npy.tmp")
            os.close(fd)
            self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=dtype,
                                                   shape=shape)
        except OSError as exc:
            self.abort()
            self.cache._unwritable(exc)
            self.array = np.empty(shape, dtype)

    def write(self, rows, values: np.ndarray) -> None:
        """Put ``values`` (B, D) at ``rows`` (a slice or B row indices)."""
        if self.array is None:
            self._open(values.shape[1], values.dtype)
        self.array[rows] = values

    def finish(self, *, mmap: bool = False) -> np.ndarray:
        """Complete the entry and return the array.

        Parameters
        ----------
        mmap : bool
            Return a read-only memory map of the stored file (else the array in memory).

        Returns
        -------
        ndarray of shape (n_rows, D)
        """
        if self.array is None:
            raise ValueError("no rows were written")
        if self.tmp is None:  # the folder was not writable: kept in memory
            return self.array
        npy, _ = self.cache._paths(self.key)
        self.array.flush()
        sha, shape, dtype = _digest(self.array), self.array.shape, self.array.dtype
        self.array = None  # the memmap is closed before the rename
        try:
            os.replace(self.tmp, npy)
            self.tmp = None
            self.cache._record(self.key, shape, dtype, sha, self.info)
        except OSError as exc:
            kept = np.load(self.tmp if self.tmp is not None else npy, allow_pickle=False)
            self.abort()
            self.cache._unwritable(exc)
            return kept
        return np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)

    def abort(self) -> None:
        """Delete the temporary file (nothing is stored)."""
        self.array = None
        if self.tmp is not None and os.path.exists(self.tmp):
            os.unlink(self.tmp)
        self.tmp = None

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
