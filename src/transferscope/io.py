"""Reading user-supplied feature files: .npz, .npy, .csv/.tsv and .parquet.

``load_features(path, features_key=..., labels_key=...)`` returns ``(features, labels, probs)``;
every missing key or column is a one-line error that lists what the file holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferscope.errors import InputError, require

FORMATS = (".npz", ".npy", ".csv", ".tsv", ".parquet")


def _load_table(path: Path, features_key, labels_key, probs_prefix):
    pd = require("pandas", "tables", "Reading CSV/parquet features")
    if path.suffix == ".parquet":
        require("pyarrow", "tables", "Reading parquet files")
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    cols = [str(c) for c in df.columns]
    df.columns = cols
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
    prob_cols = [c for c in cols if c.startswith(probs_prefix)]
    features = df[feat_cols].to_numpy() if feat_cols else None
    labels = df[label_col].to_numpy() if label_col else None
    probs = df[prob_cols].to_numpy(dtype=float) if prob_cols else None
    return features, labels, probs


def load_features(path, *, features_key=None, labels_key=None, probs_key="probs",
                  labels_path=None):
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

    Returns
    -------
    features : ndarray of shape (n_samples, n_features)
    labels : ndarray of shape (n_samples,) or None
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
    labels = probs = None
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.keys())
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
        features = np.load(path, allow_pickle=False)
    else:
        features, labels, probs = _load_table(path, features_key, labels_key, probs_key)
    if labels_path is not None:
        lp = Path(labels_path)
        if lp.suffix.lower() == ".npy":
            labels = np.load(lp, allow_pickle=False)
        elif lp.exists():
            labels = np.array(lp.read_text().split())
        else:
            raise InputError(f"Expected a labels file, got a path that does not exist: {lp}")
    return features, labels, probs
