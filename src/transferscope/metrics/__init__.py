"""Transferability metrics: a registry of pure functions of arrays.

Each metric takes features (N, D) - or source-class probabilities (N, Cs) for LEEP and NCE -
and target labels (N,), passes the one validation gate (:mod:`transferscope.validation`), and
returns a float where higher means "expected to transfer better". ``score(name, ...)`` is the
single entry point; ``list_metrics()`` shows what is registered. Adding a metric is one module
with one ``@metric(...)`` registration, imported below.
"""

from transferscope.metrics._registry import (
    METRICS,
    MetricSpec,
    feature_metrics,
    get_metric,
    list_metrics,
    model_metrics,
    score,
)
from transferscope.metrics.gbc import gbc
from transferscope.metrics.hscore import hscore, hscore_reg
from transferscope.metrics.leep import leep, nce
from transferscope.metrics.logme import logme
from transferscope.metrics.nleep import nleep
from transferscope.metrics.parc import parc
from transferscope.metrics.probes import knn, linear_probe
from transferscope.metrics.sfda import sfda
from transferscope.metrics.streaming import StreamingScorer, streaming_score
from transferscope.metrics.transrate import transrate

__all__ = [
    "METRICS",
    "MetricSpec",
    "StreamingScorer",
    "gbc",
    "feature_metrics",
    "get_metric",
    "hscore",
    "hscore_reg",
    "knn",
    "leep",
    "linear_probe",
    "model_metrics",
    "list_metrics",
    "logme",
    "nce",
    "nleep",
    "parc",
    "score",
    "sfda",
    "streaming_score",
    "transrate",
]
