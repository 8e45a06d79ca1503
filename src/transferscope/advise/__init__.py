"""One answer per candidate model: ``tscope advise``.

- :mod:`~transferscope.advise.records`: benchmark records (scores + measured truth per pair);
- :mod:`~transferscope.advise.features`: the advisor's feature vector per candidate;
- :mod:`~transferscope.advise.model`: the predictor (fit, predict, JSON, leave-one-target-out);
- :mod:`~transferscope.advise.evaluation`: how often the advice is right, against each metric.
"""

from transferscope.advise.model import Advisor, fit_advisor, load_advisor, loto_predictions

__all__ = ["Advisor", "fit_advisor", "load_advisor", "loto_predictions"]
