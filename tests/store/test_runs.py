import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("sqlalchemy")

from transferscope import InputError  # noqa: E402
from transferscope.store import RunStore, run_key  # noqa: E402

CFG = {"model": "effnet-lite:0", "strategy": "linear_probe", "lr": 1e-3}


@pytest.fixture
def store(tmp_path):
    return RunStore(f"sqlite:///{tmp_path / 'runs.db'}")


def test_finished_runs_are_skipped_not_duplicated(store):
    run = store.start(CFG, seed=0, study="s")
    store.log_epoch(run, 0, {"val_acc": 0.5})
    store.log_epoch(run, 1, {"val_acc": 0.7})
    store.finish(run, {"test_acc": 0.71}, timings={"wall_s": 3.0}, artifacts={"model": "m"})
    assert store.start(CFG, seed=0) is None
    other = store.start(CFG, seed=1)
    assert other is not None and other.id != run.id
    rows = store.list(state="finished")
    assert len(rows) == 1 and rows[0]["metrics"] == {"test_acc": 0.71}
    assert rows[0]["config"] == CFG and rows[0]["study"] == "s" and rows[0]["package_version"]
    assert [e["val_acc"] for e in store.epochs_of(run.id)] == [0.5, 0.7]


def test_finished_runs_are_frozen(store):
    run = store.start(CFG, seed=0)
    store.finish(run, {"acc": 1.0})
    with pytest.raises(InputError, match="frozen"):
        store.log_epoch(run, 2, {"acc": 0.0})
    with pytest.raises(InputError, match="frozen"):
        store.finish(run, {"acc": 0.0})


def test_failed_run_restarts_from_scratch_under_the_same_id(store):
    with pytest.raises(RuntimeError):
        with store.run(CFG, seed=0) as run:
            store.log_epoch(run, 0, {"loss": 1.0})
            raise RuntimeError("diverged")
    (row,) = store.list()
    assert row["state"] == "failed" and "diverged" in row["error"]
    again = store.start(CFG, seed=0)
    assert again.id == run.id and again.attempt == 2
    assert store.epochs_of(run.id) == []  # partial epochs of the failed attempt are gone
    store.finish(again, {"acc": 0.9})
    assert len(store.list()) == 1


def test_kill_minus_nine_leaves_a_consistent_resumable_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    child = textwrap.dedent(f"""
        import os, signal
        from transferscope.store import RunStore
        store = RunStore({url!r})
        run = store.start({CFG!r}, seed=0)
        store.log_epoch(run, 0, {{"loss": 1.0}})
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally
    """)
    res = subprocess.run([sys.executable, "-c", child], capture_output=True, check=False)
    assert res.returncode == -9
    store = RunStore(url, stale_after_s=3600)
    (row,) = store.list()
    assert row["state"] == "running" and row["metrics"] is None  # nothing half-finished
    with pytest.raises(InputError, match="running"):
        store.start(CFG, seed=0)  # heartbeat still fresh: not stolen from a live worker
    assert store.mark_stale(older_than_s=0) == 1
    assert store.list()[0]["state"] == "failed"
    run = store.start(CFG, seed=0)
    assert run.attempt == 2 and store.epochs_of(run.id) == []
    store.finish(run, {"acc": 0.8})
    assert [r["state"] for r in store.list()] == ["finished"]


def test_run_key_and_errors(store, tmp_path):
    assert run_key(CFG, 0) == run_key(dict(reversed(list(CFG.items()))), 0)
    assert run_key(CFG, 0) != run_key(CFG, 1)
    with pytest.raises(InputError, match="state one of"):
        store.list(state="done")
    with store.engine.begin() as conn:
        conn.execute(store.version.update().values(version=99))
    with pytest.raises(InputError, match="schema version"):
        RunStore(f"sqlite:///{tmp_path / 'runs.db'}")


def test_cli_runs_lists_and_filters(tmp_path, capsys):
    import json

    from transferscope.cli import main

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = RunStore(url)
    done = store.start(CFG, seed=0, study="a")
    store.finish(done, {"test_acc": 0.9})
    store.start(CFG, seed=1, study="b")
    assert main(["runs", "--db", url, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["state"], r["seed"]) for r in rows] == [("finished", 0), ("running", 1)]
    assert rows[0]["test_acc"] == 0.9
    assert main(["runs", "--db", url, "--state", "finished", "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("1,finished")
