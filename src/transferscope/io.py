"""Reading user-supplied files safely: feature files (.npz, .npy, .csv/.tsv, .parquet) and the
NumPy and table readers the dataset loaders share.

``load_features(path, features_key=..., labels_key=...)`` returns ``(features, labels, probs)``;
every missing key or column is a one-line error that lists what the file holds.

:func:`load_npy` and :func:`load_npz` read NumPy files without pickles and check each array's
header against the file (or zip member) size and the machine's memory before allocating, so a
forged header or a zip bomb is a one-line error; :func:`read_table` reads a CSV/TSV/JSONL/parquet
table with the chosen encoding, keeping label strings such as ``"NA"`` as they are.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np

from transferscope.errors import InputError, one_line, require

FORMATS = (".npz", ".npy", ".csv", ".tsv", ".parquet")
# what pandas reads as missing by default (kept for numeric columns only; labels stay strings)
NA_STRINGS = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
              "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
# an array member of an .npz may expand at most this much over its compressed size once it is
# over BOMB_MIN_BYTES (zeros deflate about 1,000:1; real data rarely beyond 20:1)
BOMB_RATIO = 200
BOMB_MIN_BYTES = 256 * 2**20
_INT = re.compile(r"-?\d{1,18}")


def memory_limit() -> int | None:
    """Bytes one array may take: half the machine's physical memory (None when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def _gb(n: int) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n:,} bytes"


def _read_header(fh, what: str):
    """``(shape, fortran_order, dtype, header_bytes)`` of the .npy stream ``fh``."""
    fmt = np.lib.format
    start = fh.tell() if hasattr(fh, "tell") else 0
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh, max_header_size=100_000)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh, max_header_size=100_000)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, EOFError, OSError, SyntaxError) as exc:
        reason = one_line(exc)
        raise InputError(
            f"Expected a NumPy array in {what}, got a file that is not one ({reason}); save it "
            "with np.save / np.savez"
        ) from None
    return shape, fortran, dtype, fh.tell() - start


def _check_dtype(dtype: np.dtype, what: str) -> None:
    if dtype.hasobject:
        raise InputError(
            f"Expected numbers or strings in {what}, got Python objects (dtype {dtype}), which "
            "are only stored as pickles and are never loaded; save them as numbers or "
            "strings, e.g. np.asarray(values, dtype=str)"
        )


def _check_size(nbytes: int, what: str) -> None:
    limit = memory_limit()
    if limit is not None and nbytes > limit:
        raise InputError(
            f"Expected an array that fits in memory in {what}, got {_gb(nbytes)} (this machine "
            f"allows {_gb(limit)}); subsample it or split it into smaller files"
        )


def load_npy(path, *, what: str | None = None) -> np.ndarray:
    """A ``.npy`` array, without pickles, checked before any allocation.

    Parameters
    ----------
    path : str or Path
        The ``.npy`` file.
    what : str, optional
        How to name it in errors (default: the file name).

    Returns
    -------
    ndarray
        The array as stored.

    Raises
    ------
    InputError
        For a missing, empty or non-NumPy file, an object (pickled) array, a header claiming more
        data than the file holds, or an array larger than half the machine's memory.
    """
    path = Path(path)
    what = what or path.name
    if not path.is_file():
        got = "a folder" if path.is_dir() else "a path that does not exist"
        raise InputError(f"Expected a .npy file, got {got}: {path}")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"Expected a NumPy array in {what}, got an empty file; save it with "
                         "np.save")
    try:
        with open(path, "rb") as fh:
            shape, _, dtype, header = _read_header(fh, what)
    except OSError as exc:
        raise InputError(f"Expected a readable file, got {what}: {one_line(exc)}") from None
    _check_dtype(dtype, what)
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if header + nbytes > size:
        raise InputError(
            f"Expected {what} to hold the {_gb(nbytes)} its header announces (shape {shape}, "
            f"{dtype}), got a file of {_gb(size)}: it is truncated or corrupt; save it again"
        )
    _check_size(nbytes, what)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"Expected a readable NumPy array in {what}, got {one_line(exc)}; "
                         "save it again with np.save") from None


class NpzArrays:
    """The arrays of an ``.npz`` file, read one at a time after checks (see :func:`load_npz`).

    Parameters
    ----------
    path : str or Path
        The ``.npz`` file.
    """

    def __init__(self, path):
        self.path = Path(path)
        name = self.path.name
        if not self.path.is_file():
            raise InputError(f"Expected an .npz file, got a path that does not exist: {path}")
        if self.path.stat().st_size == 0:
            raise InputError(f"Expected arrays in {name}, got an empty file; save them with "
                             "np.savez(path, X=inputs, y=labels)")
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise InputError(f"Expected an .npz (zip) archive in {name}, got a file that is not "
                             f"one ({one_line(exc)}); save it with np.savez") from None
        self._members = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i
                         for i in infos if not i.is_dir()}

    def keys(self) -> list[str]:
        """The names of the stored entries (``X`` for ``X.npy``)."""
        return list(self._members)

    def __contains__(self, key) -> bool:
        return key in self._members

    def __getitem__(self, key: str) -> np.ndarray:
        info = self._members[key]
        what = f"{key!r} of {self.path.name}"
        if not info.filename.endswith(".npy"):
            raise InputError(f"Expected an array under {what}, got a {info.filename!r} member "
                             "that is not one; save arrays with np.savez")
        try:
            with self._zip.open(info) as fh:
                shape, _, dtype, header = _read_header(fh, what)
            _check_dtype(dtype, what)
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if info.file_size != header + nbytes:
                raise InputError(
                    f"Expected {what} to hold the {_gb(nbytes)} its header announces (shape "
                    f"{shape}, {dtype}), got a zip member of {_gb(info.file_size)}: the file is "
                    "corrupt or forged; save it again with np.savez"
                )
            _check_size(nbytes, what)
            if nbytes > BOMB_MIN_BYTES and nbytes > BOMB_RATIO * max(info.compress_size, 1):
                raise InputError(
                    f"Expected {what} to expand at most {BOMB_RATIO}x, got {_gb(nbytes)} from "
                    f"{_gb(info.compress_size)} compressed (a zip bomb?); save the real data "
                    "with np.savez"
                )
            with self._zip.open(info) as fh:
                return np.lib.format.read_array(fh, allow_pickle=False)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"Expected a readable array under {what}, got {one_line(exc)}; "
                             "save it again with np.savez") from None

    def close(self) -> None:
        """Close the archive."""
        self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_npz(path) -> NpzArrays:
    """Open an ``.npz`` archive for checked reading: ``with load_npz(p) as d: d["X"]``.

    Parameters
    ----------
    path : str or Path
        The ``.npz`` file.

    Returns
    -------
    NpzArrays
        ``keys()``, ``in`` and ``[key]``; each array is read only after its header is checked
        against the member's declared size, half the machine's memory and a compression ratio
        of :data:`BOMB_RATIO` (above :data:`BOMB_MIN_BYTES`); pickles are never loaded.

    Raises
    ------
    InputError
        For a missing, empty or non-zip file; reading an entry raises it for a non-array
        member, object (pickled) data, a header that disagrees with the member's size, an
        array too large for memory or a zip bomb.
    """
    return NpzArrays(path)


def _encoding_hint(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "--encoding utf-16"
    return "--encoding latin-1 (or cp1252)"


def read_table(path, *, encoding: str | None = None, str_columns="all"):
    """A table from a ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet`` file, as a DataFrame.

    Parameters
    ----------
    path : str or Path
        The file; the format follows the suffix.
    encoding : str, optional
        The text encoding of a CSV/TSV/JSONL file (default UTF-8); ignored for parquet.
    str_columns : "all" or collection of str
        Columns read as strings, where ``"NA"``, ``"null"``, ``"N/A"`` and empty cells stay
        strings (empty: ``""``); the other columns get pandas' usual missing-value parsing.

    Returns
    -------
    pandas.DataFrame
        Column names as str.

    Raises
    ------
    InputError
        For an unknown encoding, bytes the encoding cannot decode (naming the encoding to pass),
        an empty file, rows with the wrong number of fields, invalid JSON or a corrupt parquet.
    """
    pd = require("pandas", "tables", "Reading tables")
    path = Path(path)
    suffix = path.suffix.lower()
    if encoding is not None:
        import codecs

        try:
            codecs.lookup(encoding)
        except LookupError:
            raise InputError(f"Expected a text encoding Python knows, got {encoding!r}; e.g. "
                             "--encoding utf-8, latin-1, cp1252 or utf-16") from None
    try:
        if suffix == ".parquet":
            require("pyarrow", "tables", "Reading parquet files")
            df = pd.read_parquet(path)
        elif suffix == ".jsonl":
            df = pd.read_json(path, lines=True, dtype=False,
                              encoding=encoding or "utf-8")
        else:
            sep = "\t" if suffix == ".tsv" else ","
            if str_columns == "all":
                df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                                 encoding=encoding)
            else:
                header = pd.read_csv(path, sep=sep, nrows=0, encoding=encoding).columns
                keep = {c for c in header if str(c) in set(str_columns)}
                df = pd.read_csv(path, sep=sep, keep_default_na=False, encoding=encoding,
                                 dtype={c: str for c in keep},
                                 na_values={c: list(NA_STRINGS) for c in header if c not in keep})
    except UnicodeDecodeError as exc:
        raise InputError(
            f"Expected {encoding or 'UTF-8'} text in {path.name}, got byte "
            f"0x{exc.object[exc.start]:02x} that is not {exc.encoding}; pass the file's "
            f"encoding, e.g. {_encoding_hint(path)}"
        ) from None
    except pd.errors.EmptyDataError:
        raise InputError(f"Expected a header row and data rows in {path.name}, got an empty "
                         "file") from None
    except pd.errors.ParserError as exc:
        msg = one_line(exc)
        raise InputError(
            f"Expected the same number of fields on every row of {path.name}, got: {msg}; quote "
            "fields that contain the separator"
        ) from None
    except (ValueError, OSError) as exc:
        msg = one_line(exc)
        kind = {".parquet": "parquet", ".jsonl": "JSON object a line"}.get(suffix, "table")
        raise InputError(f"Expected a readable {kind} in {path.name}, got an error: {msg}; "
                         "check the file (or re-export it)") from None
    df.columns = [str(c) for c in df.columns]
    return df


def labels_array(values) -> np.ndarray:
    """Label strings as an array: int64 when every one is an integer literal (``"3"``), else str.

    Parameters
    ----------
    values : sequence
        The labels, as read (str, or ints from JSON/parquet).

    Returns
    -------
    ndarray of shape (N,)
        int64 only when every label is a canonical integer (``"7"``, not ``"07"``), so that
        distinct strings never become one class.
    """
    strings = [v if isinstance(v, str) else str(v) for v in values]
    # only canonical integers: "007" and "7" are two classes, not one
    if strings and all(_INT.fullmatch(s) and str(int(s)) == s for s in strings):
        return np.asarray([int(s) for s in strings], dtype=np.int64)
    return np.asarray(strings, dtype=str)


def _load_table(path: Path, features_key, labels_key, probs_prefix, encoding=None):
    label_names = [labels_key] if labels_key else ["label", "y"]
    df = read_table(path, encoding=encoding, str_columns=label_names)
    cols = list(df.columns)
    label_col = labels_key if labels_key in cols else None
    if labels_key not in (None, "label", "y") and label_col is None:
        raise InputError(
            f"Expected a label column {labels_key!r} in {path.name}, got columns "
            f"{cols[:10]}{'...' if len(cols) > 10 else ''}; pass --labels-key with one of them"
        )
    if label_col is None:
        label_col = next((c for c in ("label", "y") if c in cols), None)
    if features_key:
        feat_cols = [c for c in cols if c.startswith(features_key)]
        if not feat_cols:
            raise InputError(
                f"Expected feature columns starting with {features_key!r} in {path.name}, got "
                f"{cols[:10]}; pass --features-key with a column prefix"
            )
    else:
        feat_cols = [c for c in cols if c != label_col and not c.startswith(probs_prefix)]
    for c in feat_cols + [c for c in cols if c.startswith(probs_prefix)]:
        if df[c].dtype.kind in "biuf":
            continue
        bad = df[c][_not_number(df[c])]
        if len(bad):
            raise InputError(
                f"Expected numbers in column {c!r} of {path.name}, got {bad.iloc[0]!r} (data "
                f"row {bad.index[0] + 1}); drop the column or choose the feature columns with "
                "--features-key"
            )
        df[c] = _numeric(df[c])
    prob_cols = [c for c in cols if c.startswith(probs_prefix)]
    features = df[feat_cols].to_numpy() if feat_cols else None
    labels = None
    if label_col:
        raw = df[label_col]
        missing = raw.isna() | (raw.astype(str).str.strip() == "")
        if missing.any():
            rows = (np.flatnonzero(missing.to_numpy()) + 1)[:5].tolist()
            raise InputError(
                f"Expected a label on every row of {path.name}, got {int(missing.sum())} "
                f"empty (rows {rows}); fill them in or remove those rows"
            )
        labels = labels_array(raw.tolist())
    probs = df[prob_cols].to_numpy(dtype=float) if prob_cols else None
    return features, labels, probs


def _not_number(col):
    """The cells of a pandas column that are not numbers (missing cells count as numbers)."""
    return _numeric(col, errors="coerce").isna() & col.notna()


def _numeric(col, errors="raise"):
    """A pandas column as float64 (``pandas.to_numeric``), missing cells NaN."""
    import pandas as pd

    return pd.to_numeric(col, errors=errors).astype(float)


def load_labels(path, *, encoding: str | None = None) -> np.ndarray:
    """Labels from their own file: a ``.npy`` array, or whitespace-separated text.

    Parameters
    ----------
    path : str or Path
        The labels file.
    encoding : str, optional
        The encoding of a text file (default UTF-8).

    Returns
    -------
    ndarray
        As stored (``.npy``), or int64 when every text label is an integer, else str.

    Raises
    ------
    InputError
        For a missing file, undecodable text (naming ``--encoding``) or an unusable ``.npy``
        (see :func:`load_npy`).
    """
    lp = Path(path)
    if not lp.exists():
        raise InputError(f"Expected a labels file, got a path that does not exist: {lp}")
    if lp.suffix.lower() == ".npy":
        return load_npy(lp)
    try:
        text = lp.read_text(encoding=encoding or "utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"Expected {encoding or 'UTF-8'} text in {lp.name}, got byte "
            f"0x{exc.object[exc.start]:02x} at offset {exc.start}; pass the file's encoding, "
            f"e.g. {_encoding_hint(lp)}"
        ) from None
    except LookupError:
        raise InputError(f"Expected a text encoding Python knows, got {encoding!r}; e.g. "
                         "--encoding utf-8, latin-1, cp1252 or utf-16") from None
    return labels_array(text.split())


def load_features(path, *, features_key=None, labels_key=None, probs_key="probs",
                  labels_path=None, encoding=None):
    """Load ``(features, labels, source_probs)`` from a file; missing parts are ``None``.

    - ``.npz``: arrays by key (defaults ``features``/``X``, ``labels``/``y``, ``probs``);
    - ``.npy``: the features array; labels from ``labels_path`` (another .npy) if given;
    - ``.csv``/``.tsv``/``.parquet``: a label column (``labels_key``, default ``label`` or
      ``y``), probability columns starting with ``probs_key``, every other column a feature
      (or only those starting with ``features_key``).

    Parameters
    ----------
    path : str or Path
        The features file.
    features_key, labels_key, probs_key : str, optional
        npz keys, or column name (labels) and column prefixes (features, probabilities).
    labels_path : str or Path, optional
        Labels from another file (``.npy``, or whitespace-separated text); they replace any in
        ``path``.
    encoding : str, optional
        Text encoding of a CSV/TSV file and of a text labels file (default UTF-8).

    Returns
    -------
    features : ndarray of shape (n_samples, n_features)
    labels : ndarray of shape (n_samples,) or None
        A table's labels are read as strings (``"NA"`` is a class, not a missing value), as
        int64 when every one is an integer.
    source_probs : ndarray of shape (n_samples, n_source_classes) or None
        Arrays as stored; shapes are checked later, by the metrics.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Expected a features file, got a path that does not exist: {path}")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"Expected a features file ending in {', '.join(FORMATS)}, got {path.name!r}; "
            "convert it (e.g. np.savez('f.npz', features=X, labels=y))"
        )
    try:
        return _load_features(path, suffix, features_key, labels_key, probs_key, labels_path,
                              encoding)
    except OSError as exc:
        raise InputError(f"Expected a readable file, got {path}: {one_line(exc)}") from None


def _load_features(path, suffix, features_key, labels_key, probs_key, labels_path, encoding):
    labels = probs = None
    if suffix == ".npz":
        with load_npz(path) as data:
            keys = data.keys()
            fk = features_key or next((k for k in ("features", "X", "x") if k in keys), None)
            if fk is None or fk not in keys:
                raise InputError(
                    f"Expected a features array {features_key or 'features'!r} in {path.name}, "
                    f"got keys {keys}; pass --features-key with one of them"
                )
            features = data[fk]
            if labels_key is not None and labels_key not in keys:
                raise InputError(
                    f"Expected a labels entry {labels_key!r} in {path.name}, got only {keys}; "
                    "choose one with --labels-key"
                )
            lk = labels_key or next((k for k in ("labels", "y") if k in keys), None)
            labels = data[lk] if lk in keys else None
            probs = data[probs_key] if probs_key in keys else None
    elif suffix == ".npy":
        features = load_npy(path)
    else:
        features, labels, probs = _load_table(path, features_key, labels_key, probs_key,
                                              encoding)
    if labels_path is not None:
        labels = load_labels(labels_path, encoding=encoding)
    return features, labels, probs
