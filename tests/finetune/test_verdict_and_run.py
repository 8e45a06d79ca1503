import json

import numpy as np
import pytest

from tests.fast import FAST_FINETUNE
from transferscope.cli import main
from transferscope.data import Dataset
from transferscope.finetune import TrainConfig, finetune
from transferscope.verdict import mean_ci, negative_transfer_verdict, paired_gain

NET = '''
import torch
from torch import nn

def fcn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Conv1d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                         nn.Flatten(), nn.Linear(8, 2))
'''


def test_mean_ci_and_verdict_rule():
    m, lo, hi = mean_ci([0.8, 0.82, 0.78])
    assert lo < m < hi and m == pytest.approx(0.8)
    assert mean_ci([0.5]) == (0.5, 0.5, 0.5)
    assert negative_transfer_verdict(0.01, 0.2) == "POSITIVE"
    assert negative_transfer_verdict(-0.2, -0.01) == "NEGATIVE"
    assert negative_transfer_verdict(-0.1, 0.1) == "INCONCLUSIVE"
    assert negative_transfer_verdict(0.01, 0.2, margin=0.05) == "INCONCLUSIVE"


def test_paired_gain_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    better = (rng.random((3, 300)) < 0.85).astype(int)
    worse = (rng.random((3, 300)) < 0.6).astype(int)
    g, lo, hi = paired_gain(better, worse)
    assert lo > 0 and g == pytest.approx(better.mean() - worse.mean())
    a = (rng.random((3, 300)) < 0.7).astype(int)
    b = (rng.random((3, 300)) < 0.7).astype(int)
    assert paired_gain(a, b)[1] < 0 < paired_gain(a, b)[2]
    assert paired_gain(a, b) == paired_gain(a, b)  # a pure function of the correctness
    with pytest.raises(ValueError, match="one shape"):
        paired_gain(a, b[:, :10])


def series(n=90):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    t = np.linspace(0, 1, 24)
    x = np.sin(2 * np.pi * (y[:, None] + 1) * t) + 0.3 * rng.standard_normal((n, 24))
    return Dataset("toy", "series", x[:, None, :].astype(np.float32), y)


def test_finetune_both_arms_store_and_reuse(tmp_path):
    from transferscope.store import SQLRunStore as RunStore

    (tmp_path / "fcn.py").write_text(NET)
    store = RunStore(f"sqlite:///{tmp_path / 'r.db'}")
    cfg = TrainConfig(min_steps=0, lr_grid=(1.0,), epochs=3, batch_size=16, seed=0, device="cpu")
    model = f"torch:{tmp_path / 'fcn.py'}:fcn"
    res = finetune(series(), model, "linear_probe", splits=1, seeds=2, config=cfg, layer="4",
                   store=store)
    assert [a["arm"] for a in res.arms] == ["transfer", "scratch"]
    assert res.verdict in ("POSITIVE", "NEGATIVE", "INCONCLUSIVE")
    g, lo, hi = res.gain
    assert lo <= g <= hi
    runs = store.list()
    assert len(runs) == 4 and {r["state"] for r in runs} == {"finished"}
    assert all(len(store.epochs_of(r["id"])) >= 1 for r in runs)
    # training time: every run reached the default target (the lowest best val accuracy)
    best = [h.best_val_acc for h in res.histories.values()]
    assert res.target_acc == min(best)
    for arm in res.arms:
        assert 0 < arm["time_to_target_s"] <= arm["best_s"] <= arm["train_s"]
    t, s = res.arms
    assert res.time_saved_s == s["time_to_target_s"] - t["time_to_target_s"]
    again = finetune(series(), model, "linear_probe", splits=1, seeds=2, config=cfg, layer="4",
                     store=store)
    assert again.histories == {}  # nothing retrained: every run came from the store
    assert again.gain == res.gain and len(store.list()) == 4
    assert again.arms[0]["time_to_target_s"] == t["time_to_target_s"]  # from the stored curves
    assert again.time_saved_s == res.time_saved_s


def test_curve_summary_break_even_data_and_time_saved():
    from transferscope.verdict import summarise_curves

    pts = [{"fraction": f, "transfer_acc": t, "scratch_acc": s, "gain": t - s,
            "transfer_best_s": tt, "scratch_best_s": st}
           for f, t, s, tt, st in [(0.1, 0.80, 0.50, 1.0, 2.0), (0.5, 0.85, 0.80, 2.0, 6.0),
                                   (1.0, 0.86, 0.90, 3.0, 10.0)]]
    out = summarise_curves(pts)
    # the gain falls from +0.05 at 0.5 to -0.04 at 1.0: zero at 0.5 + 0.5 * 5/9
    assert out["break_even_fraction"] == pytest.approx(0.5 + 0.5 * 0.05 / 0.09)
    p0 = out["points"][0]
    # scratch reaches 0.80 at fraction 0.5 (data) and at 6 s (time): transfer had 0.1 and 1 s
    assert p0["data_saved_x"] == pytest.approx(0.5 / 0.1)
    assert p0["time_saved_s"] == pytest.approx(6.0 - 1.0)
    p1 = out["points"][1]  # 0.85: halfway between scratch's 0.80 and 0.90
    assert p1["data_saved_x"] == pytest.approx(0.75 / 0.5)
    assert p1["time_saved_s"] == pytest.approx(8.0 - 2.0)
    pts[2].update(scratch_acc=0.84, gain=0.02)  # scratch never catches up with transfer
    out = summarise_curves(pts)
    assert out["points"][1]["data_saved_x"] == float("inf")
    assert out["points"][1]["time_saved_s"] == float("inf")
    assert out["break_even_fraction"] is None


def test_time_to_target_and_best_time():
    from transferscope.verdict import best_time as _best_time
    from transferscope.verdict import time_to_target

    curves = [[(1.0, 0.5), (2.0, 0.8), (3.0, 0.9)], [(1.5, 0.7), (2.5, 0.85)], [(1.0, 0.2)]]
    assert time_to_target(curves, 0.8) == 2.5  # median of 2.0, 2.5 and never (inf)
    assert time_to_target(curves, 0.95) == float("inf")
    assert time_to_target(curves[:2], 0.5) == pytest.approx(1.25)
    assert _best_time([(1.0, 0.5), (2.0, 0.9), (3.0, 0.9)]) == 2.0  # first best epoch


def test_cli_finetune(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    (tmp_path / "fcn.py").write_text(NET)
    d = series()
    np.savez(tmp_path / "s.npz", X=d.inputs, y=d.labels)
    code = main(["finetune", *FAST_FINETUNE, "--data", str(tmp_path / "s.npz"), "--model",
                 f"torch:{tmp_path / 'fcn.py'}:fcn", "--strategy", "lp_ft", "--opt",
                 "probe_epochs=1", "--epochs", "2", "--seeds", "2", "--layer", "4",
                 "--save", str(tmp_path / "saved"), "--format", "json", "--db", db])
    out = capsys.readouterr().out
    assert code == 0 and [r["arm"] for r in json.loads(out)] == ["transfer", "scratch"]
    rows = json.loads(out)
    assert rows[0]["verdict"] in ("POSITIVE", "NEGATIVE", "INCONCLUSIVE")
    assert "18 test samples and 2 seeds, gains smaller than +-" in rows[0]["power"]
    assert rows[0]["mde"] > 0 and rows[1]["gain"] == rows[0]["gain"]
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "Transfer vs scratch" in card and "scratch" in card
    assert "Evidence: " in card and "gains smaller than" in card
    assert "the strategy's times 1, chosen on validation" in card
    from transferscope.store import SQLRunStore as RunStore

    runs = RunStore(db).list()
    saved = [r for r in runs if r["artifacts"]]
    assert len(runs) == 4 and len(saved) == 1  # the saved seed knows where its model is
    assert saved[0]["artifacts"]["model_dir"] == str((tmp_path / "saved").resolve())
    weights = (tmp_path / "saved" / "model.safetensors").read_bytes()
    (tmp_path / "saved" / "model.safetensors").unlink()
    # a rerun trains nothing new, yet --save retrains the chosen seed: the same model
    code = main(["finetune", *FAST_FINETUNE, "--data", str(tmp_path / "s.npz"), "--model",
                 f"torch:{tmp_path / 'fcn.py'}:fcn", "--strategy", "lp_ft", "--opt",
                 "probe_epochs=1", "--epochs", "2", "--seeds", "2", "--layer", "4",
                 "--save", str(tmp_path / "saved"), "--db", db])
    out = capsys.readouterr().out
    assert code == 0 and "training time saved" in out and len(RunStore(db).list()) == 4
    assert (tmp_path / "saved" / "model.safetensors").read_bytes() == weights
    code = main(["finetune", *FAST_FINETUNE, "--data", str(tmp_path / "s.npz"), "--model", "raw",
                 "--no-db"])
    assert code == 2 and "weights can train" in capsys.readouterr().err


def test_inverse_interpolation_and_learning_curves(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run store, ./tscope.db, lands here
    from transferscope.finetune.run import learning_curves
    from transferscope.verdict import _inverse

    assert _inverse([0.1, 0.5, 1.0], [0.5, 0.7, 0.9], 0.8) == pytest.approx(0.75)
    assert _inverse([0.1, 0.5], [0.5, 0.7], 0.9) is None
    assert _inverse([0.1, 0.5], [0.5, 0.7], 0.4) == 0.1
    (tmp_path / "fcn.py").write_text(NET)
    model = f"torch:{tmp_path / 'fcn.py'}:fcn"
    cfg = TrainConfig(min_steps=0, lr_grid=(1.0,), epochs=2, batch_size=16, seed=0, device="cpu")
    curves = learning_curves(series(120), model, "full", fractions=(0.25, 1.0), splits=1, seeds=2,
                             config=cfg, layer="4")
    pts = curves["points"]
    assert [p["fraction"] for p in pts] == [0.25, 1.0]
    assert pts[0]["n_train"] < pts[1]["n_train"]
    for p in pts:
        assert p["gain_lo"] <= p["gain"] <= p["gain_hi"] and p["data_saved_x"] > 0
        assert p["time_saved_s"] > -p["transfer_best_s"]  # scratch needs some time, or inf
    np.savez(tmp_path / "s.npz", X=series(120).inputs, y=series(120).labels)
    code = main(["finetune", *FAST_FINETUNE, "--data", str(tmp_path / "s.npz"), "--model", model,
                 "--strategy", "full", "--epochs", "2", "--seeds", "2", "--layer", "4",
                 "--fractions", "0.5,1"])
    out = capsys.readouterr().out
    assert code == 0 and "break-even fraction" in out and "data_saved_x" in out
    assert "time_saved_s" in out and (tmp_path / "tscope.db").exists()


def test_a_run_that_fails_is_marked_failed_and_retried(tmp_path):
    pytest.importorskip("peft")
    from transferscope import InputError
    from transferscope.store import SQLRunStore as RunStore

    (tmp_path / "fcn.py").write_text(NET)
    store = RunStore(f"sqlite:///{tmp_path / 'r.db'}")
    model = f"torch:{tmp_path / 'fcn.py'}:fcn"
    cfg = TrainConfig(min_steps=0, lr_grid=(1.0,), epochs=1, batch_size=16, seed=0, device="cpu")
    with pytest.raises(InputError, match="target modules"):
        finetune(series(), model, "lora", splits=1, seeds=1, config=cfg, layer="4", store=store,
                 strategy_options={"target_modules": ("nope",)})
    (run,) = store.list()
    assert run["state"] == "failed" and "target modules" in run["error"]
