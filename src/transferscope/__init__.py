"""transferscope: make transfer learning predictable.

Score how well a pretrained model's features will transfer to a target task
(LogME, LEEP, NCE, H-score, NLEEP, SFDA, GBC, TransRate, PARC, kNN and linear probes)
before any fine-tuning.
"""

__version__ = "0.1.0"

from transferscope.errors import InputError, OptionalDependencyError, TransferabilityWarning

_LAZY = {"get_metric", "list_metrics", "score"}  # the metrics load on first use, not on import


def __getattr__(name):
    if name in _LAZY:
        from transferscope import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module 'transferscope' has no attribute {name!r}")

__all__ = [
    "InputError",
    "OptionalDependencyError",
    "TransferabilityWarning",
    "__version__",
    "get_metric",
    "list_metrics",
    "score",
]
