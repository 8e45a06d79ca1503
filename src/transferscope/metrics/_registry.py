"""The metric registry: :class:`MetricSpec` entries in the package's one
:class:`~transferscope.registry.Registry`, filled by the :func:`metric` decorator.

A metric is an implementation ``impl(x, labels, **options) -> float`` where ``x`` has already
passed the validation gate (features, or source probabilities) and ``labels`` is a
:class:`~transferscope.validation.CheckedLabels`. The decorator returns the public function,
which runs the gate, checks option names (with a "did you mean") and calls the implementation.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from transferscope.errors import InputError
from transferscope.registry import Registry, check_options
from transferscope.validation import (
    check_features,
    check_labels,
    check_source_probs,
)

INPUT_KINDS = ("features", "source_probs", "source_predictions")


@dataclass(frozen=True)
class MetricSpec:
    """What the registry knows about one metric."""

    name: str
    func: Callable  # the public, validating function
    summary: str
    inputs: str  # one of INPUT_KINDS
    regression: bool = False  # also accepts continuous targets
    stochastic: bool = False  # depends on a seed
    min_per_class: int = 1
    reference: str = ""
    options: dict = field(default_factory=dict)  # option name -> default

    @property
    def needs(self) -> str:
        return {
            "features": "features + labels",
            "source_probs": "source probs + labels",
            "source_predictions": "source probs or labels + labels",
        }[self.inputs]


METRICS = Registry("metric", "metrics", hint="; 'tscope metrics' lists them")


def _check_x(spec: MetricSpec, x):
    if spec.inputs == "features":
        return check_features(x, keep_float32=True)
    if spec.inputs == "source_probs":
        return check_source_probs(x, len(x))
    # source_predictions: probabilities (argmax taken by the metric) or hard source labels
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if arr.ndim == 1:
        return check_labels(arr, len(arr), name="source labels").codes
    return check_source_probs(arr, len(arr)).argmax(axis=1)


def metric(
    name: str,
    summary: str,
    *,
    inputs: str = "features",
    regression: bool = False,
    stochastic: bool = False,
    min_per_class: int = 1,
    reference: str = "",
):
    """Register ``impl`` under ``name`` and return its validating public function."""
    if inputs not in INPUT_KINDS:
        raise ValueError(f"inputs must be one of {INPUT_KINDS}, got {inputs!r}")

    def decorate(impl):
        params = inspect.signature(impl).parameters
        options = {
            k: p.default for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

        @functools.wraps(impl)
        def public(x, labels, **kwargs):
            check_options(f"metric {name!r}", kwargs, options)
            xs = _check_x(spec, x)
            is_regression = bool(kwargs.get("regression", False))
            checked = check_labels(
                labels,
                len(xs),
                regression=is_regression,
                min_per_class=1 if is_regression else min_per_class,
            )
            return float(impl(xs, checked, **kwargs))

        spec = MetricSpec(
            name=name,
            func=public,
            summary=summary,
            inputs=inputs,
            regression=regression,
            stochastic=stochastic,
            min_per_class=min_per_class,
            reference=reference,
            options=options,
        )
        METRICS.register(name, spec)
        public.spec = spec
        return public

    return decorate


def get_metric(name: str) -> MetricSpec:
    """The :class:`MetricSpec` registered as ``name``.

    Raises
    ------
    InputError
        For an unknown name, with a did-you-mean.
    """
    return METRICS.get(name)


def list_metrics() -> list[MetricSpec]:
    """Every registered metric, in registration order."""
    return METRICS.values()


def feature_metrics(names, where: str) -> tuple[str, ...]:
    """Check that every metric in ``names`` scores features (not source probabilities).

    The one place for the rule "feature metrics only" (rank, layer profiles, studies).

    Parameters
    ----------
    names : iterable of str
        Metric names; unknown names fail with a did-you-mean.
    where : str
        What needs feature metrics, for the message (e.g. ``"rank"``).

    Returns
    -------
    tuple of str
        ``names`` as a tuple.

    Raises
    ------
    InputError
        If ``names`` is empty or a metric needs source-model probabilities (LEEP, NCE).
    """
    names = tuple(names)
    if not names:
        raise InputError(f"Expected at least one metric for {where}, got none; e.g. "
                         "--metric logme")
    for m in names:
        if get_metric(m).inputs != "features":
            raise InputError(
                f"Expected feature metrics for {where}, got {m!r}, which needs source-model "
                "probabilities; use feature metrics (logme, hscore_reg, knn, linear_probe, ...)"
            )
    return names


def model_metrics(names, where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split metric names into feature metrics and source-head metrics (LEEP, NCE).

    The one place for "what a model's scores need": feature metrics read a layer's features,
    source-head metrics the source model's class probabilities (its head).

    Parameters
    ----------
    names : iterable of str
        Metric names; unknown names fail with a did-you-mean.
    where : str
        What needs them, for the message (e.g. ``"rank"``).

    Returns
    -------
    features : tuple of str
        The feature metrics, in the given order.
    source : tuple of str
        The metrics that need source probabilities, in the given order.

    Raises
    ------
    InputError
        If ``names`` is empty.
    """
    names = tuple(names)
    if not names:
        raise InputError(f"Expected at least one metric for {where}, got none; e.g. "
                         "--metric logme")
    source = tuple(m for m in names if get_metric(m).inputs != "features")
    return tuple(m for m in names if m not in source), source


def score(name: str, features=None, labels=None, *, source_probs=None, **options) -> float:
    """Compute metric ``name``: the single entry point over the registry.

    Parameters
    ----------
    name : str
        A registered metric (see :func:`list_metrics`).
    features : array of shape (n_samples, n_features), optional
        Needed by feature-based metrics.
    labels : array of shape (n_samples,), or (n_samples, n_targets) for regression
    source_probs : array of shape (n_samples, n_source_classes), optional
        Needed by LEEP and NCE.
    **options
        Passed to the metric (e.g. ``regression=True`` for LogME, ``seed=0`` for NLEEP).
    """
    spec = get_metric(name)
    if labels is None:
        raise InputError(f"metric {name!r} needs labels, got none; pass labels=...")
    x = features if spec.inputs == "features" else source_probs
    if x is None:
        what = "features" if spec.inputs == "features" else "source_probs"
        raise InputError(
            f"metric {name!r} needs {spec.needs}, got no {what}; pass {what}=..."
        )
    return spec.func(x, labels, **options)
