"""The run-store contract, checked on every implementation (database and memory), plus what
only the database store does: kill -9, schema versions and migrations, the CLI."""

import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("sqlalchemy")

from tests.fast import FAST_FINETUNE
from transferscope import InputError  # noqa: E402
from transferscope.config import RunConfig  # noqa: E402
from transferscope.store import (  # noqa: E402
    SCHEMA_VERSION,
    MemoryRunStore,
    SQLRunStore,
    open_store,
    upgrade,
)

CFG = RunConfig(kind="train", data="d" * 16, model="effnet-lite:0|w=abc", strategy="full",
                strategy_config={"lr": 1e-3, "backbone_lr": 1e-4}, layer="act2")


def cfg(seed=0):
    return CFG.replace(seed=seed)


@pytest.fixture(params=["sql", "memory"])
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryRunStore()
    return SQLRunStore(f"sqlite:///{tmp_path / 'runs.db'}")


def test_finished_runs_are_skipped_not_duplicated(store):
    run = store.start(cfg(0), study="s", tags={"arm": "transfer"})
    store.log_epoch(run, 0, {"val_acc": 0.5})
    store.log_epoch(run, 1, {"val_acc": 0.7})
    store.finish(run, {"test_acc": 0.71}, timings={"wall_s": 3.0}, artifacts={"model": "m"})
    assert store.start(cfg(0)) is None
    other = store.start(cfg(1))
    assert other is not None and other.id != run.id
    rows = store.list(state="finished")
    assert len(rows) == 1 and rows[0]["metrics"] == {"test_acc": 0.71}
    assert RunConfig.from_dict(rows[0]["config"]) == cfg(0)
    assert rows[0]["study"] == "s" and rows[0]["package_version"] and rows[0]["seed"] == 0
    assert rows[0]["tags"] == {"arm": "transfer"}
    assert [e["val_acc"] for e in store.epochs_of(run.id)] == [0.5, 0.7]
    assert store.find(cfg(0))["id"] == run.id and store.find(cfg(7)) is None


def test_finished_runs_are_frozen(store):
    run = store.start(cfg())
    store.finish(run, {"acc": 1.0})
    with pytest.raises(InputError, match="frozen"):
        store.log_epoch(run, 2, {"acc": 0.0})
    with pytest.raises(InputError, match="frozen"):
        store.finish(run, {"acc": 0.0})
    with pytest.raises(InputError, match="frozen"):
        store.fail(run, "late")


def test_failed_run_restarts_from_scratch_under_the_same_id(store):
    with pytest.raises(RuntimeError):
        with store.run(cfg()) as run:
            store.log_epoch(run, 0, {"loss": 1.0})
            raise RuntimeError("diverged")
    (row,) = store.list()
    assert row["state"] == "failed" and "diverged" in row["error"]
    again = store.start(cfg())
    assert again.id == run.id and again.attempt == 2
    assert store.epochs_of(run.id) == []  # partial epochs of the failed attempt are gone
    store.finish(again, {"acc": 0.9})
    assert len(store.list()) == 1
    with store.run(cfg()) as handle:  # finished: the one way to reuse
        assert handle is None


def _move_owner(store, config, **owner):
    """Pretend the run's owner is another process (another host, or a given pid)."""
    if isinstance(store, MemoryRunStore):
        store._runs[config.key()]["owner"].update(owner)
        return
    row = store.find(config)
    with store.engine.begin() as conn:
        conn.execute(store.runs.update().where(store.runs.c.id == row["id"]).values(
            owner=json.dumps({**row["owner"], **owner})))


def test_a_run_of_a_live_process_is_never_taken_over(store):
    import os

    store.start(cfg())
    with pytest.raises(InputError, match=f"running in process {os.getpid()} on .*wait for it"):
        store.start(cfg())
    assert store.mark_stale(older_than_s=0) == 0  # alive: not stale, however old the beat


def test_a_run_owned_elsewhere_is_a_lease_that_expires(store):
    store.start(cfg())
    _move_owner(store, cfg(), host="elsewhere", pid=1)
    with pytest.raises(InputError, match="heartbeat .*mark it stale"):
        store.start(cfg())
    assert store.mark_stale(older_than_s=3600) == 0
    assert store.mark_stale(older_than_s=0) == 1
    assert store.start(cfg()).attempt == 2


def test_a_run_whose_process_is_gone_restarts_at_once(store):
    import subprocess

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    store.start(cfg())
    _move_owner(store, cfg(), pid=int(gone.stdout), started=None)
    again = store.start(cfg())  # no waiting for the heartbeat to age
    assert again.attempt == 2


def test_artifacts_merge_on_finished_runs_only(store):
    with pytest.raises(InputError, match="finished run"):
        store.set_artifacts(cfg(), {"a": 1})
    run = store.start(cfg())
    store.finish(run, {}, artifacts={"a": "x"})
    store.set_artifacts(cfg(), {"b": "y"})
    assert store.find(cfg())["artifacts"] == {"a": "x", "b": "y"}


def test_a_run_belongs_to_several_studies_with_their_own_names(store):
    run = store.start(cfg(), tags={"source": "torch:net.py:f@w.pt"})
    store.finish(run, {"acc": 1.0})
    assert store.list(study="s1") == []
    assert store.link(cfg(), "s1", {"source": "pretrained:f"})
    assert store.link(cfg(), "s2", {"source": "other"})
    assert not store.link(cfg(9), "s1", {})
    assert [r["tags"]["source"] for r in store.list(study="s1")] == ["pretrained:f"]
    assert [r["study"] for r in store.list(study="s2")] == ["s2"]
    assert store.list()[0]["tags"] == {"source": "torch:net.py:f@w.pt"}
    assert len(store.list(study="s1", state="finished")) == 1


def test_bad_state_filter(store):
    with pytest.raises(InputError, match="state one of"):
        store.list(state="done")


def test_open_store_picks_the_implementation(tmp_path):
    assert isinstance(open_store(None), MemoryRunStore)
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'x.db'}"), SQLRunStore)


def test_kill_minus_nine_leaves_a_consistent_resumable_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    child = textwrap.dedent(f"""
        import os, signal
        from transferscope.config import RunConfig
        from transferscope.store import open_store
        store = open_store({url!r})
        run = store.start(RunConfig.from_dict({CFG.to_dict()!r}))
        store.log_epoch(run, 0, {{"loss": 1.0}})
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally
    """)
    res = subprocess.run([sys.executable, "-c", child], capture_output=True, check=False)
    assert res.returncode == -9, res.stderr
    store = SQLRunStore(url, stale_after_s=3600)
    (row,) = store.list()
    assert row["state"] == "running" and row["metrics"] is None  # nothing half-finished
    assert row["owner"]["pid"] != os.getpid()
    assert store.mark_stale() == 1  # its process is gone: stale at once, heartbeat or not
    assert store.list()[0]["state"] == "failed"
    run = store.start(cfg())
    assert run.attempt == 2 and store.epochs_of(run.id) == []
    store.finish(run, {"acc": 0.8})
    assert [r["state"] for r in store.list()] == ["finished"]


V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, run_key VARCHAR(64) NOT NULL UNIQUE,
    study VARCHAR(200), state VARCHAR(16) NOT NULL, attempt INTEGER NOT NULL,
    config TEXT NOT NULL, seed INTEGER NOT NULL, package_version VARCHAR(40) NOT NULL,
    created_at FLOAT NOT NULL, heartbeat_at FLOAT NOT NULL, finished_at FLOAT, metrics TEXT,
    timings TEXT, artifacts TEXT, error TEXT);
CREATE TABLE epochs (run_id INTEGER NOT NULL REFERENCES runs (id), epoch INTEGER NOT NULL,
    metrics TEXT NOT NULL, PRIMARY KEY (run_id, epoch));
INSERT INTO schema_version VALUES (1);
"""


def _v1_store(path):
    """A database as schema version 1 (transferscope 0.1.0 before this change) wrote it."""
    con = sqlite3.connect(path)
    con.executescript(V1_SCHEMA)
    old = {"kind": "train", "target": "ucr:GunPoint", "source": "pretrained:a", "arm": "transfer",
           "strategy": "full", "train_fraction": 0.2, "data": "x", "model": "m"}
    con.execute("INSERT INTO runs VALUES (1, 'k1', 'st', 'finished', 1, ?, 0, '0.1.0', 1.0, "
                "2.0, 3.0, ?, '{}', '{}', NULL)", (json.dumps(old), json.dumps({"acc": 0.5})))
    con.execute("INSERT INTO runs VALUES (2, 'k2', NULL, 'failed', 2, '{\"model\": \"m\"}', 1, "
                "'0.1.0', 1.0, 2.0, NULL, NULL, NULL, NULL, 'boom')")
    con.executemany("INSERT INTO epochs VALUES (?, ?, ?)",
                    [(1, 0, json.dumps({"val_acc": 0.4})), (1, 1, json.dumps({"val_acc": 0.5}))])
    con.commit()
    con.close()


def test_an_old_store_is_refused_with_the_upgrade_command_then_upgraded_losslessly(tmp_path):
    from transferscope.cli import main

    path = tmp_path / "old.db"
    _v1_store(path)
    url = f"sqlite:///{path}"
    with pytest.raises(InputError, match=f"tscope db upgrade --db {url}"):
        SQLRunStore(url)
    assert main(["db", "upgrade", "--db", url]) == 0
    store = SQLRunStore(url)
    rows = store.list()
    assert [(r["id"], r["state"], r["study"], r["attempt"], r["error"]) for r in rows] == [
        (1, "finished", "st", 1, None), (2, "failed", None, 2, "boom")]
    assert rows[0]["metrics"] == {"acc": 0.5} and rows[0]["config"]["target"] == "ucr:GunPoint"
    assert rows[0]["tags"] == {"arm": "transfer", "fraction": 0.2, "kind": "train",
                               "source": "pretrained:a", "strategy": "full",
                               "target": "ucr:GunPoint"}
    assert [e["val_acc"] for e in store.epochs_of(1)] == [0.4, 0.5]
    assert [r["id"] for r in store.list(study="st")] == [1]  # membership carried over
    assert upgrade(url) == (SCHEMA_VERSION, SCHEMA_VERSION)  # idempotent


def test_a_newer_store_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    store = SQLRunStore(url)
    with store.engine.begin() as conn:
        conn.execute(store.version.update().values(version=SCHEMA_VERSION + 1))
    with pytest.raises(InputError, match="newer transferscope"):
        SQLRunStore(url)
    with pytest.raises(InputError, match="newer transferscope"):
        upgrade(url)


def test_cli_runs_lists_and_filters(tmp_path, capsys):
    from transferscope.cli import main

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = SQLRunStore(url)
    done = store.start(cfg(0), study="a")
    store.finish(done, {"test_acc": 0.9})
    store.start(cfg(1), study="b")
    assert main(["runs", "--db", url, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["state"], r["seed"]) for r in rows] == [("finished", 0), ("running", 1)]
    assert rows[0]["test_acc"] == 0.9
    assert main(["runs", "--db", url, "--state", "finished", "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("1,finished")


NET = """
import torch
from torch import nn

def slow():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(),
                         nn.Conv1d(32, 32, 5, padding=2), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten())
"""


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_stopped_finetune_says_one_line_marks_its_run_failed_and_resumes(tmp_path, signame):
    import signal
    import time

    import numpy as np

    (tmp_path / "net.py").write_text(NET)
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    np.savez(tmp_path / "s.npz", X=rng.standard_normal((300, 1, 64)).astype(np.float32), y=y)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    argv = [sys.executable, "-m", "transferscope.cli", "finetune", *FAST_FINETUNE, "--data",
            str(tmp_path / "s.npz"), "--model", f"torch:{tmp_path / 'net.py'}:slow",
            "--strategy", "full", "--seeds", "1", "--patience", "50", "--batch-size", "8",
            "--db", url]
    # the default SIGINT disposition in the child, as in a terminal: a shell starts background
    # jobs (``.ci/run &``) with SIGINT ignored, and a child inherits that
    proc = subprocess.Popen([*argv, "--epochs", "200"], stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    store, deadline = SQLRunStore(url), time.time() + 120
    while time.time() < deadline:  # wait until a run has logged an epoch
        rows = store.list(state="running") if (tmp_path / "r.db").exists() else []
        if rows and store.epochs_of(rows[0]["id"]):
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the finetune never logged an epoch")
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if signame == "SIGTERM" else 130), err
    assert "Traceback" not in err and err.count("\n") == 1 and "resumes" in err, err
    (row,) = store.list()
    assert row["state"] == "failed" and ("Interrupt" in row["error"] or "SIGTERM" in row["error"])
    done = subprocess.run([*argv, "--epochs", "2"], capture_output=True, text=True,
                          check=False)  # another config, and the stopped one restarts cleanly
    assert done.returncode == 0, done.stderr


def _set_lock_owner(store, name, owner, beat=None):
    import time

    beat = time.time() if beat is None else beat
    if isinstance(store, MemoryRunStore):
        store._locks[name] = (owner, beat)
        return
    with store.engine.begin() as conn:
        conn.execute(store.locks.update().where(store.locks.c.name == name).values(
            owner=json.dumps(owner), heartbeat_at=beat))


def test_locks_keep_work_to_one_live_process(store):
    import socket
    import time

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with store.lock("study 'x'"):
            store.acquire_lock("study 'x'")  # the holder itself may take it again
            _set_lock_owner(store, "study 'x'", {"host": socket.gethostname(),
                                                 "pid": sleeper.pid, "started": None})
            with pytest.raises(InputError, match=f"held by process {sleeper.pid}"):
                store.acquire_lock("study 'x'")
            sleeper.kill()
            sleeper.wait()
            store.acquire_lock("study 'x'")  # its holder is gone: taken over at once
            _set_lock_owner(store, "study 'x'", {"host": "elsewhere", "pid": 1},
                            beat=time.time() - 10)
            with pytest.raises(InputError, match="only one may run it"):
                store.acquire_lock("study 'x'")  # a lease from another host, still fresh
            _set_lock_owner(store, "study 'x'", {"host": "elsewhere", "pid": 1},
                            beat=time.time() - 3600)
            store.acquire_lock("study 'x'")  # an expired lease
        store.acquire_lock("study 'x'")  # released by the with block
    finally:
        sleeper.kill()


def test_a_read_only_store_is_a_one_line_error_and_stays_consistent(tmp_path):
    path = tmp_path / "runs.db"
    done = SQLRunStore(f"sqlite:///{path}")
    done.finish(done.start(cfg(0)), {"acc": 1.0})
    ro = SQLRunStore(f"sqlite:///file:{path}?mode=ro&uri=true")
    assert ro.start(cfg(0)) is None  # reading (reuse) works
    with pytest.raises(InputError, match="Expected to write the run store .*readonly"):
        ro.start(cfg(1))
    assert [r["seed"] for r in SQLRunStore(f"sqlite:///{path}").list()] == [0]


def test_a_full_disk_is_a_one_line_error_and_leaves_no_half_run(tmp_path):
    """SQLite's page limit gives the same error as a full disk (SQLITE_FULL)."""
    from sqlalchemy import event

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    store = SQLRunStore(url)
    store.finish(store.start(cfg(0)), {"acc": 1.0})
    with store.engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()

    @event.listens_for(store.engine, "connect")
    def _limit(dbapi_conn, _record):
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

    store.engine.dispose()  # new connections get the limit
    big = cfg(1).replace(strategy_config={"padding": "x" * 200_000})
    with pytest.raises(InputError, match="disk is full.*disk has space"):
        store.start(big)
    assert [r["seed"] for r in SQLRunStore(url).list()] == [0]  # nothing half-written


def test_a_study_in_an_upgraded_store_ignores_runs_of_the_old_format(tmp_path):
    from tests.study.conftest import write_study
    from transferscope.study import evaluate, load_spec

    spec = load_spec(write_study(tmp_path))
    db = tmp_path / "study.db"
    _v1_store(db)  # a finished run of study 'st' in the old record format
    con = sqlite3.connect(db)
    con.execute("UPDATE runs SET study = ?", (spec.name,))
    con.commit()
    con.close()
    upgrade(spec.db)
    assert len(SQLRunStore(spec.db).list(study=spec.name, state="finished")) == 1
    assert evaluate(spec)["pairs"] == []  # read, not crashed on, not counted
