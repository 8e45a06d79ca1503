"""Every hostile case (tests/hostile/cases_*.py) has its expected outcome: a one-line error
(exit 2, no traceback) naming what was expected, or a correct result."""

import pytest

from tests.hostile import cases_cli, cases_data, cases_models  # noqa: F401  (registration)
from tests.hostile.harness import CASES, run_case


def test_the_suite_is_large():
    assert len(CASES) >= 150


@pytest.mark.parametrize("name", sorted(CASES))
def test_case(name, tmp_path):
    c = CASES[name]
    outcome, detail = run_case(c, tmp_path)
    assert outcome == c.expect, f"{name}: {outcome}: {detail}"
    if c.needle is not None:
        assert c.needle in detail, f"{name}: {detail!r} lacks {c.needle!r}"
