"""``tscope runs export --mlflow``: every store run becomes an MLflow run, read back with the
real MLflow client from a local file store; a second export skips what is there, a changed
run is replaced, and bad input is one line."""

import json
import sys

import pytest

from transferscope import InputError
from transferscope.cli import main
from transferscope.config import RunConfig
from transferscope.errors import OptionalDependencyError
from transferscope.store import MemoryRunStore, to_mlflow
from transferscope.store.export import flatten

try:  # skip only when mlflow itself cannot be imported
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient
except ImportError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(f"mlflow cannot be imported ({exc}); pip install 'transferscope[mlflow]'",
                allow_module_level=True)


@pytest.fixture
def uri(tmp_path, monkeypatch):
    # MLflow 3 keeps its file store in maintenance mode and wants this opt-in to write to it
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def _active(client, experiment_id):
    return client.search_runs([experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
                              max_results=1000)


def _by_store_id(client, experiment_id):
    return {int(r.data.tags["transferscope.run_id"]): r for r in _active(client, experiment_id)}


def test_every_run_reads_back_with_params_curves_results_tags_and_model(recorded, uri,
                                                                         tmp_path):
    store = recorded.store
    done = to_mlflow(store, uri)
    runs = store.list()
    assert [r["id"] for r in done.rows] == [r["id"] for r in runs]
    assert {r["action"] for r in done.rows} == {"exported"}
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("transferscope")
    assert exp.experiment_id == done.experiment_id
    back = _by_store_id(client, exp.experiment_id)
    assert sorted(back) == [r["id"] for r in runs]  # one MLflow run per store run, no more
    for r in runs:
        m = back[r["id"]]
        assert m.info.run_id == next(x["mlflow_run_id"] for x in done.rows if x["id"] == r["id"])
        assert m.info.status == "FINISHED"
        assert m.info.start_time == int(r["created_at"] * 1000)
        assert m.info.end_time == int(r["finished_at"] * 1000)
        # params: the RunConfig, flattened
        config = flatten(r["config"])
        assert set(m.data.params) == set(config)
        for k, v in config.items():
            assert m.data.params[k] == (v if isinstance(v, str) else json.dumps(v))
        # tags: the store's, the state and the run identity
        tags = m.data.tags
        assert tags["transferscope.run_key"] == r["run_key"]
        assert tags["state"] == "finished" and tags["attempt"] == str(r["attempt"])
        for k, v in (r["tags"] or {}).items():
            if v is not None:
                assert tags[k] == str(v)
        assert tags.get("study") == (r["study"] or None)
        # per-epoch curves with their steps, and the final results
        epochs = store.epochs_of(r["id"])
        curve_keys = {k for e in epochs for k, v in e.items()
                      if k != "epoch" and isinstance(v, (int, float))}
        for key in curve_keys:
            history = client.get_metric_history(m.info.run_id, key)
            assert [h.step for h in history] == [e["epoch"] for e in epochs]
            assert [h.value for h in history] == pytest.approx([float(e[key]) for e in epochs])
        for k, v in r["metrics"].items():
            if isinstance(v, (int, float)):
                name = f"final_{k}" if k in curve_keys else k
                assert m.data.metrics[name] == pytest.approx(float(v))
        if r["config"]["kind"] == "scores":  # one value per model role
            for row in r["metrics"]["rows"]:
                assert m.data.metrics[f"{row['role']}.logme"] == pytest.approx(row["logme"])
        assert m.data.metrics["wall_s"] == pytest.approx(r["timings"]["wall_s"])
        # the whole store record travels as an artifact
        record = json.loads(open(client.download_artifacts(
            m.info.run_id, "transferscope_run.json", str(tmp_path))).read())
        assert record["metrics"] == r["metrics"] and record["epochs"] == epochs
    # the saved model is an artifact of the run that produced it
    (saved,) = [r for r in runs if r["artifacts"]]
    files = {a.path for a in client.list_artifacts(back[saved["id"]].info.run_id, "model_dir")}
    assert {"model_dir/model.safetensors", "model_dir/config.json"} <= files
    got = client.download_artifacts(back[saved["id"]].info.run_id,
                                    "model_dir/model.safetensors", str(tmp_path / "dl"))
    with open(got, "rb") as a, open(recorded.dir / "saved" / "model.safetensors", "rb") as b:
        assert a.read() == b.read()


def test_verdict_tags_match_the_study_evaluation(recorded, uri):
    (pair,) = recorded.evaluation["pairs"]
    done = to_mlflow(recorded.store, uri, study="pair")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("pair")  # the study's name by default
    assert exp.experiment_id == done.experiment_id
    back = _by_store_id(client, exp.experiment_id)
    assert sorted(back) == [r["id"] for r in recorded.store.list(study="pair")]
    for run_id in pair["transfer_runs"]:
        tags = back[run_id].data.tags
        assert tags["study"] == "pair" and tags["arm"] == "transfer"
        assert tags["verdict"] == pair["verdict"]
        assert float(tags["verdict_gain"]) == pytest.approx(pair["gain"], abs=1e-6)
        assert float(tags["verdict_gain_lo"]) == pytest.approx(pair["gain_lo"], abs=1e-6)
        assert float(tags["verdict_gain_hi"]) == pytest.approx(pair["gain_hi"], abs=1e-6)
        assert tags["verdict_baseline"] == "scratch" and tags["verdict_seeds"] == "2"
    for run_id in pair["scratch_runs"]:  # a baseline has no verdict of its own
        assert "verdict" not in back[run_id].data.tags
    # the finetune call's own verdict, for the runs it trained now
    transfer_ids = [r["id"] for r in recorded.store.list()
                    if r["config"]["strategy_config"].get("backbone_lr") == 5e-4]
    assert len(transfer_ids) == 2 and len(recorded.trained.histories) == 2
    everything = to_mlflow(recorded.store, uri, experiment="all")
    tags = {r["id"]: r for r in everything.rows}
    by_id = _by_store_id(client, everything.experiment_id)
    for run_id in transfer_ids:
        assert tags[run_id]["action"] == "exported"
        assert by_id[run_id].data.tags["verdict"] == recorded.trained.verdict
        assert float(by_id[run_id].data.tags["verdict_gain"]) == pytest.approx(
            recorded.trained.gain[0], abs=1e-6)


def test_a_second_export_skips_and_a_changed_run_is_replaced(uri, tmp_path):
    store = MemoryRunStore()
    cfg = RunConfig(kind="train", data="d" * 16, model="m", strategy="full", layer="4")
    first = store.start(cfg, tags={"arm": "transfer"})
    store.log_epoch(first, 0, {"val_acc": 0.5, "seconds": 1.0})
    store.finish(first, {"test_acc": 0.6})
    running = store.start(cfg.replace(seed=1), tags={"arm": "transfer"})
    store.log_epoch(running, 0, {"val_acc": 0.4, "seconds": 1.0})
    done = to_mlflow(store, uri)
    assert [r["action"] for r in done.rows] == ["exported", "exported"]
    client = MlflowClient(tracking_uri=uri)
    status = {int(r.data.tags["transferscope.run_id"]): r.info.status
              for r in _active(client, done.experiment_id)}
    assert status == {first.id: "FINISHED", running.id: "RUNNING"}
    again = to_mlflow(store, uri)
    assert [r["action"] for r in again.rows] == ["unchanged", "unchanged"]
    assert [r["mlflow_run_id"] for r in again.rows] == [r["mlflow_run_id"] for r in done.rows]
    assert len(_active(client, done.experiment_id)) == 2  # nothing duplicated
    assert "2 already exported and unchanged (skipped)" in again.summary()
    # the running run fails, and the finished one gets a saved model: both are replaced
    store.log_epoch(running, 1, {"val_acc": 0.45, "seconds": 2.0})
    store.fail(running, "RuntimeError: out of memory")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"weights")
    store.set_artifacts(cfg, {"model_dir": str(tmp_path / "model")})
    third = to_mlflow(store, uri)
    assert [r["action"] for r in third.rows] == ["replaced", "replaced"]
    active = _by_store_id(client, done.experiment_id)
    assert len(active) == 2 and active[running.id].info.status == "FAILED"
    assert active[running.id].data.tags["error"] == "RuntimeError: out of memory"
    assert [m.value for m in client.get_metric_history(active[running.id].info.run_id,
                                                       "val_acc")] == [0.4, 0.45]
    assert [a.path for a in client.list_artifacts(active[first.id].info.run_id, "model_dir")] \
        == ["model_dir/model.safetensors"]
    for old in done.rows:  # the earlier exports are deleted (restorable), not left beside
        assert client.get_run(old["mlflow_run_id"]).info.lifecycle_stage == "deleted"


def test_an_artifact_whose_files_are_gone_is_tagged_and_noted(uri, tmp_path, caplog):
    caplog.set_level("INFO", logger="transferscope")
    store = MemoryRunStore()
    cfg = RunConfig(kind="train", data="d" * 16, model="m", strategy="full", layer="4")
    store.finish(store.start(cfg), {"test_acc": 0.5},
                 artifacts={"model_dir": str(tmp_path / "gone")})
    done = to_mlflow(store, uri)
    (run,) = _active(MlflowClient(tracking_uri=uri), done.experiment_id)
    assert run.data.tags["missing_artifact.model_dir"] == str(tmp_path / "gone")
    assert done.notes and "is gone" in done.notes[0] and "is gone" in caplog.text


def test_cli_exports_and_says_what_it_did(recorded, uri, capsys):
    db = recorded.spec.db
    assert main(["runs", "export", "--db", db, "--mlflow", uri, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [r["id"] for r in recorded.store.list()]
    assert main(["runs", "export", "--db", db, "--mlflow", uri]) == 0
    out = capsys.readouterr().out
    assert f"0 run(s) exported, {len(rows)} already exported and unchanged (skipped)" in out


def test_an_empty_store_is_one_line(uri, capsys, tmp_path):
    with pytest.raises(InputError, match="Expected runs to export, got none"):
        to_mlflow(MemoryRunStore(), uri)
    code = main(["runs", "export", "--db", f"sqlite:///{tmp_path / 'empty.db'}", "--mlflow",
                 uri])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Expected runs to export" in err
    assert "tscope finetune" in err


def _one_run_store():
    store = MemoryRunStore()
    cfg = RunConfig(kind="train", data="d" * 16, model="m", strategy="full", layer="4")
    store.finish(store.start(cfg), {"test_acc": 0.5})
    return store


def test_a_uri_mlflow_refuses_is_one_line(recorded, capsys, uri):
    with pytest.raises(InputError, match="got 'nosuch://x'.*no tracking store for the "
                                         "scheme 'nosuch'.*e.g. file:./mlruns"):
        to_mlflow(_one_run_store(), "nosuch://x")
    code = main(["runs", "export", "--db", recorded.spec.db, "--mlflow", "nosuch://x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("tscope: error: Expected an MLflow tracking URI")
    with pytest.raises(InputError, match="Expected an MLflow tracking URI, got ''"):
        to_mlflow(_one_run_store(), "")


def test_the_file_store_without_mlflows_opt_in_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    import mlflow.environment_variables as env

    if env.MLFLOW_ALLOW_FILE_STORE.get():  # pragma: no cover - an MLflow that allows it
        pytest.skip("this MLflow writes its file store without the opt-in")
    with pytest.raises(InputError, match="set MLFLOW_ALLOW_FILE_STORE=true"):
        to_mlflow(_one_run_store(), (tmp_path / "mlruns").as_uri())


def test_missing_mlflow_names_the_extra(monkeypatch, capsys, recorded, uri):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    with pytest.raises(OptionalDependencyError, match=r"pip install 'transferscope\[mlflow\]'"):
        to_mlflow(_one_run_store(), uri)
    code = main(["runs", "export", "--db", recorded.spec.db, "--mlflow", uri])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "transferscope[mlflow]" in err


def test_export_options_are_checked(capsys, recorded, uri):
    assert main(["runs", "export", "--db", recorded.spec.db]) == 2
    assert "Expected --mlflow URI" in capsys.readouterr().err
    assert main(["runs", "--db", recorded.spec.db, "--mlflow", uri]) == 2
    assert "Expected --mlflow URI" in capsys.readouterr().err
    assert main(["runs", "--db", recorded.spec.db, "--experiment", "x"]) == 2
    assert "Expected --experiment only with 'tscope runs export'" in capsys.readouterr().err
    assert main(["runs", "list", "--db", recorded.spec.db, "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(recorded.store.list())
    with pytest.raises(InputError, match="Expected an MLflow experiment name"):
        to_mlflow(_one_run_store(), uri, experiment=" ")


def test_a_deleted_experiment_is_one_line(uri):
    client = MlflowClient(tracking_uri=uri)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(InputError, match="got a deleted one .*mlflow experiments restore"):
        to_mlflow(_one_run_store(), uri, experiment="gone")
