"""The local process pool: a worker shows its warnings as the driver does (one line under tscope),
and a driver that stops (Ctrl-C, SIGTERM, an error) takes its workers down with it."""

import warnings

import pytest

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


def _slow(task):
    """Task ``(kind, folder)``: ``fast`` returns at once; ``slow`` writes its pid to ``folder``
    and sleeps for ten minutes."""
    import os
    import time
    from pathlib import Path

    kind, folder = task
    if kind == "fast":
        return 0
    Path(folder, f"{os.getpid()}.pid").write_text("")
    time.sleep(600)
    return 1


def _alive(pid):
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("stop", ["interrupt", "close"])
def test_a_stopped_driver_leaves_no_pool_worker_running(tmp_path, stop):
    # Ctrl-C / SIGTERM reach the driver as KeyboardInterrupt; before, the pool waited for (or,
    # on a second signal, orphaned) workers still doing runs whose results nobody would store
    import time

    tasks = [("fast", tmp_path)] + [("slow", tmp_path)] * 3
    runs = make_executor("local", jobs=2).run(_slow, tasks)
    assert next(runs)[1] == 0
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("*.pid"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [int(p.stem) for p in tmp_path.glob("*.pid")]
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    if stop == "interrupt":
        with pytest.raises(KeyboardInterrupt):
            runs.throw(KeyboardInterrupt)
    else:
        runs.close()
    assert not any(_alive(pid) for pid in pids)  # terminated and reaped, not left sleeping
    assert len(list(tmp_path.glob("*.pid"))) == 2  # the third slow task never started
