"""Studies: a grid of sources x targets x strategies x data fractions x seeds from one spec
file, run (resumably) by a local process pool or Ray, evaluated against the transferability
scores, and reported as one HTML file."""

from transferscope.study.evaluate import collect, evaluate
from transferscope.study.report import write_report
from transferscope.study.runner import run_study, study_status
from transferscope.study.spec import StudySpec, load_spec, parse_spec

__all__ = ["StudySpec", "collect", "evaluate", "load_spec", "parse_spec", "run_study",
           "study_status", "write_report"]
