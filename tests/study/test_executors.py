"""The local process pool: a worker shows its warnings as the driver does (one line under tscope),
and a driver that stops (Ctrl-C, SIGTERM, an error) takes its workers down with it."""

import sys
import warnings
from pathlib import Path

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


def _children(pid):
    """The live child processes of ``pid`` (Linux /proc)."""
    from pathlib import Path

    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        kids += [int(k) for k in (task / "children").read_text().split()]
    return [k for k in kids if _running(k)]


def _running(pid):
    """Alive and not a zombie waiting to be reaped."""
    from pathlib import Path

    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_to_the_study_driver_stops_its_pool_workers(tmp_path):
    # a supervisor (systemd, a batch system, `timeout`) signals the driver alone; before, its
    # workers went on training runs nobody would store, for minutes
    import os
    import signal
    import subprocess
    import time

    from tests.study.conftest import PAIR_SPEC, write_study

    long_runs = PAIR_SPEC.replace("epochs = 2", "epochs = 100000\npatience = 100000")
    spec = write_study(tmp_path, long_runs)
    proc = subprocess.Popen([sys.executable, "-m", "transferscope.cli", "study", "run",
                             str(spec), "--jobs", "2", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = [k for k in _children(proc.pid)
                       if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text()]
        assert len(workers) == 2, "the pool's two workers should be running by now"
        time.sleep(3)  # into their training runs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
        assert "terminated" in proc.stderr.read()
        assert not [k for k in workers if _running(k)]
    finally:  # whatever failed, leave nothing running
        for pid in [proc.pid, *workers]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
