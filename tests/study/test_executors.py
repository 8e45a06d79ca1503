"""The local process pool shows a worker's warnings as the driver does: one line under tscope."""

import warnings

from transferscope.cli import _one_line_warning
from transferscope.study.executors import make_executor


def _warn(i):
    warnings.warn(f"careful with task {i}", UserWarning, stacklevel=1)
    return i * i


def test_pool_workers_warn_in_one_line_like_the_cli(capfd, monkeypatch):
    monkeypatch.setattr(warnings, "showwarning", _one_line_warning)
    out = sorted(r for _, r, e in make_executor("local", jobs=2).run(_warn, [1, 2, 3]))
    assert out == [1, 4, 9]
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "careful" in line]
    assert sorted(lines) == [f"tscope: warning: careful with task {i}" for i in (1, 2, 3)]
    assert "warnings.warn" not in err and "UserWarning" not in err


def test_pool_workers_keep_pythons_format_outside_the_cli(capfd):
    out = sorted(r for _, r, e in make_executor("local", jobs=2).run(_warn, [1]))
    assert out == [1]
    assert "UserWarning: careful with task 1" in capfd.readouterr().err
