"""Concurrent writers: two finetunes of one run, two drivers of one study. One of them is
refused with one clear line; nothing is duplicated or lost; a stopped holder frees its lock."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.fast import FAST_FINETUNE
from tests.store.test_runs import NET
from tests.study.conftest import SPEC, write_study
from transferscope.cli import main
from transferscope.store import SQLRunStore

pytest.importorskip("sqlalchemy")


def _wait(predicate, proc, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the first process ended before {what}: {proc.stderr.read()}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"never saw {what}")


def test_two_finetunes_of_one_run_the_second_is_refused(tmp_path, capsys):
    (tmp_path / "net.py").write_text(NET)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "s.npz", X=rng.standard_normal((300, 1, 64)).astype(np.float32),
             y=np.arange(300) % 3)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    args = ["finetune", *FAST_FINETUNE, "--data", str(tmp_path / "s.npz"), "--model",
            f"torch:{tmp_path / 'net.py'}:slow", "--strategy", "full", "--seeds", "1",
            "--epochs", "200", "--patience", "50", "--batch-size", "8", "--db", url]
    first = subprocess.Popen([sys.executable, "-m", "transferscope.cli", *args],
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: (tmp_path / "r.db").exists() and SQLRunStore(url).list(state="running"),
              first, "a running run")
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"running in process {first.pid}" in err and err.count("\n") == 1, err
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    (row,) = SQLRunStore(url).list()  # one run, not two; the stopped one is marked failed
    assert row["state"] == "failed"


def test_two_drivers_of_one_study_the_second_is_refused_and_the_lock_is_freed(tmp_path):
    from transferscope.study import load_spec, run_study

    path = write_study(tmp_path, SPEC.replace("epochs = 2\n", "epochs = 60\npatience = 60\n"))
    spec = load_spec(path)
    first = subprocess.Popen([sys.executable, "-m", "transferscope.cli", "study", "run",
                              str(path)], stderr=subprocess.PIPE, text=True,
                             cwd=os.getcwd())
    store_file = tmp_path / "study.db"

    def locked():
        if not store_file.exists():
            return False
        store = SQLRunStore(spec.db)
        with store.engine.connect() as conn:
            return conn.execute(store.locks.select()).first() is not None

    try:
        _wait(locked, first, "the study lock")
        with pytest.raises(Exception, match=f"held by process {first.pid}.*only one may run"):
            run_study(spec)
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 143 and "Traceback" not in err, err
    assert not locked()  # the stopped driver released its lock
    runs = SQLRunStore(spec.db).list(study=spec.name)
    assert len({r["run_key"] for r in runs}) == len(runs)  # nothing duplicated


def test_a_new_store_opened_by_two_processes_at_once(tmp_path, monkeypatch):
    """The race of two drivers opening a new store: the second checks the schema version
    before the first has created the schema, then its own create fails; it checks again."""
    import transferscope.store.sql as sql

    url = f"sqlite:///{tmp_path / 'new.db'}"
    SQLRunStore(url)  # the first process created the schema ...
    real, calls = sql.schema_version, []

    def stale(conn, sa):  # ... after the second looked for it
        calls.append(1)
        return None if len(calls) == 1 else real(conn, sa)

    monkeypatch.setattr(sql, "schema_version", stale)
    store = SQLRunStore(url)
    assert len(calls) == 2 and store.list() == []
    with store.engine.connect() as conn:  # one version row, not two
        assert conn.execute(store.version.select()).all() == [(sql.SCHEMA_VERSION,)]
