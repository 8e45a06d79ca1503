import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.study import chromium
from transferscope.cli import main
from transferscope.store import SQLRunStore as RunStore
from transferscope.study import evaluate, load_spec, run_study, study_status, write_report


def finished(spec):
    return RunStore(spec.db).list(study=spec.name, state="finished")


def test_study_runs_resumes_without_duplicates_and_evaluates(study_dir):
    spec = load_spec(study_dir)
    assert study_status(spec) == {"pretrain": {"planned": 1, "finished": 0, "failed": 0,
                                               "running": 0, "pending": 1},
                                  "main": "waiting for pretraining"}
    summary = run_study(spec)
    # 2 targets x 2 sources: 4 score runs; transfer 2 x 2 x 2 fractions x 2 seeds = 16;
    # scratch shared by the two sources (one architecture): 2 targets x 2 fractions x 2 seeds
    assert summary["main"]["planned"] == 4 + 16 + 8 and not summary["main"]["failed"]
    runs = finished(spec)
    assert len(runs) == 1 + 28
    again = run_study(spec)  # everything finished: nothing runs, nothing is duplicated
    assert again["main"]["ran"] == 0 and again["pretrain"]["ran"] == 0
    assert len(RunStore(spec.db).list(study=spec.name)) == 29
    status = study_status(spec)
    assert status["train"]["finished"] == 24 and status["scores"]["finished"] == 4

    ev = evaluate(spec)
    assert len(ev["pairs"]) == 2 * 2 * 2  # target x source x fraction
    for p in ev["pairs"]:
        assert p["gain_lo"] <= p["gain"] <= p["gain_hi"] and p["seeds"] == 2
        assert p["verdict"] in ("POSITIVE", "NEGATIVE", "INCONCLUSIVE")
        assert p["gain"] == pytest.approx(p["transfer_acc"] - p["scratch_acc"])
        assert "logme" in p and p["risk"] in ("LIKELY-POSITIVE", "RISK", "LIKELY-NEGATIVE")
    metrics = {r["metric"] for r in ev["metrics"]}
    assert metrics == {"logme", "hscore_reg", "risk"}
    for r in ev["metrics"]:
        assert r["pairs"] == 4 and r["neg_actual"] == sum(
            p["verdict"] == "NEGATIVE" for p in ev["pairs"] if p["fraction"] == 1.0)
        if r["metric"] != "risk":
            assert r["targets"] == 2 and r["regret"] >= 0

    # the advisor, refitted leave-one-target-out on the study, against each metric
    advice = ev["advice"]
    assert advice["targets"] == 2 and advice["note"] == ""
    assert [r["predictor"] for r in advice["rows"]] == ["advisor", "logme", "hscore_reg"]
    for r in advice["rows"]:
        assert r["cells"] == 4 and r["examples"] == 8 and r["regret"] >= 0
    assert 0 <= advice["rows"][0]["brier"] <= 1 and advice["rows"][0]["strategy_acc"] == 1.0
    # ... and refitted on it for the user: tscope advise --fit
    from transferscope.study.evaluate import study_records

    records = study_records(spec)
    assert len(records) == 4 and all(s["complete"] for r in records
                                     for s in r["truth"].values())
    # sizes from the study's tags (60 samples, 3 classes, a 60/20/20 split), no data loaded
    assert {(f, s["per_class"], s["classes"]) for r in records for f, s in r["truth"].items()} \
        == {("0.5", 6.0, 3), ("1.0", 12.0, 3)}
    # the score part alone (bench/width.py on a store without fine-tuning): the same values
    from transferscope.study.evaluate import study_scores

    scores = study_scores(spec)
    assert len(scores) == 4
    for r in records:
        s = scores[(r["target"], r["source"])]
        assert (s["dim"], s["risk"]) == (r["dim"], r["risk"])
        assert s["scores"] == r["scores"]
    # the times the advisor's time_x is read from are in the records
    for r in records:
        for size in r["truth"].values():
            assert size["scratch_best_s"] >= 0
            assert all(a["transfer_best_s"] >= 0 for a in size["strategies"].values())
    out = study_dir.parent / "mine.json"
    assert main(["advise", "--fit", str(study_dir), "--out", str(out)]) == 0
    mine = json.loads(out.read_text())
    assert mine["trained_on"]["examples"] == 8 and mine["trained_on"]["targets"] == 2
    # with how it fared held out there, as the shipped advisor keeps its own
    (held,) = mine["held_out"].values()
    assert held["targets"] == 2 and held["examples"] == 8 and 0 <= held["brier"] <= 1


def test_report_renders_in_headless_chromium(study_dir, tmp_path):
    pytest.importorskip("matplotlib")
    if chromium.chromium() is None:
        pytest.skip("chromium not installed (.ci/run installs Debian's chromium)")
    spec = load_spec(study_dir)
    run_study(spec)
    path = write_report(spec, tmp_path / "report.html")
    text = path.read_text()
    # self-contained: no script, style, image or link fetched from anywhere
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', text)
    seen = chromium.load(path, tmp_path)
    assert seen["errors"] == []
    n = text.count("<figure>")
    assert n >= 4 and seen["figures"] == (n, n)  # every figure has a non-empty box
    # the probe does catch errors: a page with a console error and a broken image
    bad = tmp_path / "bad.html"
    bad.write_text("<html><head></head><body><img src='missing.png'><figure><svg></svg>"
                   "</figure><script>console.error('boom')</script></body></html>")
    seen = chromium.load(bad, tmp_path)
    assert any("boom" in e for e in seen["errors"]) and any("missing" in e
                                                           for e in seen["errors"])


def test_kill_9_mid_study_then_resume_loses_and_duplicates_nothing(study_dir):
    spec = load_spec(study_dir)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "transferscope.cli", "study", "run",
                             str(study_dir)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(finished(spec)) < 8:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = finished(spec)
    assert 8 <= len(partial) < 29, "the kill should land mid-study"
    summary = run_study(spec)
    assert summary["main"]["reused"] >= len(partial) - 1  # the finished runs were kept
    runs = RunStore(spec.db).list(study=spec.name)
    assert len(runs) == 29 and all(r["state"] == "finished" for r in runs)
    assert len({r["run_key"] for r in runs}) == 29
    for r in runs:  # every finished run has its complete epoch log, once
        epochs = RunStore(spec.db).epochs_of(r["id"])
        if r["config"]["kind"] == "train":
            assert [e["epoch"] for e in epochs] == list(range(len(epochs))) and epochs


def test_local_process_pool_and_cli(study_dir, capsys):
    code = main(["study", "run", str(study_dir), "--jobs", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "0 failed" in out
    spec = load_spec(study_dir)
    assert len(finished(spec)) == 29
    assert main(["study", "status", str(study_dir)]) == 0
    assert "train: planned 24, finished 24" in capsys.readouterr().out
    assert main(["study", "evaluate", str(study_dir)]) == 0
    assert "share of (target, source, strategy, fraction) cells" in capsys.readouterr().out
    assert main(["study", "run", str(study_dir), "--executor", "sparkk"]) == 2
    assert "Unknown executor 'sparkk'" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_executor_runs_a_tiny_study_end_to_end(study_dir):
    pytest.importorskip("ray")
    spec = load_spec(study_dir)
    summary = run_study(spec, executor="ray", jobs=2)
    assert not summary["main"]["failed"] and len(finished(spec)) == 29
    ev = evaluate(spec)
    assert len(ev["pairs"]) == 8
