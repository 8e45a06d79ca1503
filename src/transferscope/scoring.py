"""Score one feature set with several metrics: the API behind ``tscope score`` and the demo."""

from __future__ import annotations

import time

import numpy as np

from transferscope.errors import InputError
from transferscope.metrics import get_metric, list_metrics
from transferscope.progress import unit

DEFAULT_METRICS = ("logme", "hscore_reg", "knn", "linear_probe")
PROFILE_METRICS = ("logme", "hscore_reg", "linear_probe", "knn")  # per layer (tscope layers)


def split_options(metrics, options: dict) -> dict[str, dict]:
    """Give each metric the options it accepts; an option no selected metric takes is an error."""
    per_metric = {m: {} for m in metrics}
    for key, value in options.items():
        takers = [m for m in metrics if key in get_metric(m).options]
        if not takers:
            raise InputError(
                f"Option {key!r} is not accepted by any of {', '.join(metrics)}; see "
                "'tscope metrics' for each metric's options"
            )
        for m in takers:
            per_metric[m][key] = value
    return per_metric


def score_many(metrics, features=None, labels=None, *, source_probs=None, options=None,
               on_error="raise") -> list[dict]:
    """Score one feature set (or source-model output) with each metric in ``metrics``.

    Parameters
    ----------
    metrics : iterable of str
        Registered metric names; unknown names fail before any work.
    features : array-like of shape (n_samples, n_features), optional
        For feature metrics.
    labels : array-like of shape (n_samples,)
        Target labels.
    source_probs : array-like of shape (n_samples, n_source_classes), optional
        The source model's probabilities, for LEEP and NCE.
    options : dict, optional
        Metric options, each given to every selected metric that accepts it
        (:func:`split_options`).
    on_error : {"raise", "skip"}
        What to do when a metric's input is missing: raise, or report a row with
        ``value=nan`` and the reason in ``note``.

    Returns
    -------
    list of dict
        One row per metric: ``metric``, ``value``, ``seconds`` and ``note``.
    """
    metrics = list(metrics)
    for m in metrics:
        get_metric(m)  # unknown names fail before any work
    per_metric = split_options(metrics, options or {})
    rows = []
    with unit("metrics", len(metrics), "metric", transient=True) as bar:
        for m in metrics:
            spec = get_metric(m)
            x = features if spec.inputs == "features" else source_probs
            if x is None:
                need = "features" if spec.inputs == "features" else "source probabilities"
                if on_error == "raise":
                    raise InputError(f"metric {m!r} needs {spec.needs}; this input has no "
                                     f"{need}")
                rows.append({"metric": m, "value": float("nan"), "seconds": 0.0,
                             "note": f"needs {need}"})
            else:
                start = time.perf_counter()
                value = spec.func(x, labels, **per_metric[m])
                rows.append({"metric": m, "value": value,
                             "seconds": round(time.perf_counter() - start, 4), "note": ""})
            bar.update(metric=m)
    return rows


def all_metric_names() -> list[str]:
    """Names of every registered metric (what ``--metric all`` means)."""
    return [m.name for m in list_metrics()]


def demo_inputs(seed: int = 0):
    """A built-in example: scikit-learn's digits seen through three "models" of falling quality.

    - ``pixels``: the 64 raw pixel intensities;
    - ``pixels+noise``: the pixels buried in Gaussian noise of twice their spread;
    - ``noise``: features independent of the labels (a model that learned nothing useful).

    Each "model" also has a source head for LEEP/NCE: a logistic regression trained on a disjoint
    half of the digits to predict the digit modulo 5 (a related but different source task).

    Parameters
    ----------
    seed : int
        Seed of the source/target halves and of the noise.

    Returns
    -------
    models : dict of str to tuple of (ndarray, ndarray)
        ``{name: (features, source_probs)}``: features of shape (n_target, 64) and source
        probabilities of shape (n_target, 5), for the target half (n_target = 899).
    labels : ndarray of shape (n_target,)
        The target digits, 0 to 9.
    """
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    src, tgt = order[: len(y) // 2], order[len(y) // 2 :]
    variants = {
        "pixels": x,
        "pixels+noise": x + rng.normal(scale=2 * x.std(), size=x.shape),
        "noise": rng.normal(size=x.shape),
    }
    models = {}
    for name, feats in variants.items():
        head = LogisticRegression(max_iter=3000).fit(feats[src], y[src] % 5)
        models[name] = (feats[tgt], head.predict_proba(feats[tgt]))
    return models, y[tgt]
