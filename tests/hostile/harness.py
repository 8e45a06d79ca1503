"""The hostile-input harness: a case is a CLI call on files made for it, with the outcome it
must have. ``run_case`` classifies what really happened:

- ``error``: exit 2 and exactly one line on stderr, no traceback (what every bad input gets);
- ``correct``: exit 0 and the case's check of the output passes;
- ``traceback``: an exception escaped, or stderr holds a traceback;
- ``wrong``: exit 0 (or another code) but the check fails: a silently wrong result;
- ``multiline``: exit 2 with an error spread over several lines (e.g. argparse's usage text);
- ``setup``: the case could not even be built (only when run against an older checkout).

Cases register with :func:`case` in the ``cases_*.py`` modules of this folder;
``tests/hostile/test_hostile.py`` asserts every case's expected outcome, and
``bench/hostile_counts.py`` counts outcomes (e.g. against an older checkout).
"""

from __future__ import annotations

import contextlib
import io
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Case:
    """One hostile input.

    Attributes
    ----------
    name : str
        Unique, says what is hostile.
    argv : callable
        ``argv(folder) -> list of str``: makes its files in ``folder`` and returns the CLI call.
    expect : str
        ``"error"`` or ``"correct"``.
    needle : str, optional
        For errors: text the one-line message must contain.
    check : callable, optional
        For correct results: ``check(stdout, folder) -> bool``.
    """

    name: str
    argv: Callable
    expect: str = "error"
    needle: str | None = None
    check: Callable | None = None


CASES: dict[str, Case] = {}


def case(name: str, argv: Callable, expect: str = "error", needle: str | None = None,
         check: Callable | None = None) -> Case:
    """Register a hostile case (names must be unique)."""
    if name in CASES:
        raise ValueError(f"hostile case {name!r} registered twice")
    CASES[name] = Case(name, argv, expect, needle, check)
    return CASES[name]


def run_case(c: Case, folder: Path) -> tuple[str, str]:
    """Run one case in ``folder``; returns ``(outcome, detail)``."""
    from transferscope.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    out, err = io.StringIO(), io.StringIO()
    try:
        argv = c.argv(folder)
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        return "setup", f"{type(exc).__name__}: {exc}"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse usage errors
                code = exc.code
    except (Exception, SystemExit):  # noqa: BLE001 - what escaped is the finding
        return "traceback", traceback.format_exc(limit=3).strip().splitlines()[-1]
    text = err.getvalue()
    if "Traceback" in text:
        return "traceback", text.strip().splitlines()[-1]
    if code == 2 and text.count("\n") == 1 and text.startswith("tscope: error:"):
        return "error", text.strip()
    if code == 0:
        try:
            ok = c.check is None or bool(c.check(out.getvalue(), folder))
        except Exception as exc:  # noqa: BLE001 - output the check cannot even read is wrong
            ok, text = False, f"{text}\ncheck failed: {type(exc).__name__}: {exc}"
        if ok:
            return "correct", ""
    if code == 2 and "error" in text:
        return "multiline", text.strip().splitlines()[-1]
    return "wrong", f"exit {code}: {text.strip()[-200:]}"
