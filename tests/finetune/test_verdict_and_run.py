import json

import numpy as np
import pytest

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
    assert paired_gain(a, b, seed=1) == paired_gain(a, b, seed=1)
    with pytest.raises(ValueError, match="one shape"):
        paired_gain(a, b[:, :10])


def series(n=90):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    t = np.linspace(0, 1, 24)
    x = np.sin(2 * np.pi * (y[:, None] + 1) * t) + 0.3 * rng.standard_normal((n, 24))
    return Dataset("toy", "series", x[:, None, :].astype(np.float32), y)


def test_finetune_both_arms_store_and_reuse(tmp_path):
    from transferscope.store import RunStore

    (tmp_path / "fcn.py").write_text(NET)
    store = RunStore(f"sqlite:///{tmp_path / 'r.db'}")
    cfg = TrainConfig(epochs=3, batch_size=16, seed=0, device="cpu")
    model = f"torch:{tmp_path / 'fcn.py'}:fcn"
    res = finetune(series(), model, "linear_probe", seeds=2, config=cfg, layer="4",
                   store=store)
    assert [a["arm"] for a in res.arms] == ["transfer", "scratch"]
    assert res.verdict in ("POSITIVE", "NEGATIVE", "INCONCLUSIVE")
    g, lo, hi = res.gain
    assert lo <= g <= hi
    runs = store.list()
    assert len(runs) == 4 and {r["state"] for r in runs} == {"finished"}
    assert all(len(store.epochs_of(r["id"])) >= 1 for r in runs)
    again = finetune(series(), model, "linear_probe", seeds=2, config=cfg, layer="4",
                     store=store)
    assert again.histories == {}  # nothing retrained: every run came from the store
    assert again.gain == res.gain and len(store.list()) == 4


def test_cli_finetune(tmp_path, capsys):
    (tmp_path / "fcn.py").write_text(NET)
    d = series()
    np.savez(tmp_path / "s.npz", X=d.inputs, y=d.labels)
    code = main(["finetune", "--data", str(tmp_path / "s.npz"), "--model",
                 f"torch:{tmp_path / 'fcn.py'}:fcn", "--strategy", "lp_ft", "--opt",
                 "probe_epochs=1", "--epochs", "2", "--seeds", "2", "--layer", "4",
                 "--save", str(tmp_path / "saved"), "--format", "json"])
    out = capsys.readouterr().out
    assert code == 0 and [r["arm"] for r in json.loads(out)] == ["transfer", "scratch"]
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "Transfer vs scratch" in card and "scratch" in card
    code = main(["finetune", "--data", str(tmp_path / "s.npz"), "--model", "raw"])
    assert code == 2 and "torch-module model" in capsys.readouterr().err


def test_inverse_interpolation_and_learning_curves(tmp_path, capsys):
    from transferscope.finetune.run import _inverse, learning_curves

    assert _inverse([0.1, 0.5, 1.0], [0.5, 0.7, 0.9], 0.8) == pytest.approx(0.75)
    assert _inverse([0.1, 0.5], [0.5, 0.7], 0.9) is None
    assert _inverse([0.1, 0.5], [0.5, 0.7], 0.4) == 0.1
    (tmp_path / "fcn.py").write_text(NET)
    model = f"torch:{tmp_path / 'fcn.py'}:fcn"
    cfg = TrainConfig(epochs=2, batch_size=16, seed=0, device="cpu")
    curves = learning_curves(series(120), model, "full", fractions=(0.25, 1.0), seeds=2,
                             config=cfg, layer="4")
    pts = curves["points"]
    assert [p["fraction"] for p in pts] == [0.25, 1.0]
    assert pts[0]["n_train"] < pts[1]["n_train"]
    for p in pts:
        assert p["gain_lo"] <= p["gain"] <= p["gain_hi"] and p["data_saved_x"] > 0
    np.savez(tmp_path / "s.npz", X=series(120).inputs, y=series(120).labels)
    code = main(["finetune", "--data", str(tmp_path / "s.npz"), "--model", model,
                 "--strategy", "full", "--epochs", "2", "--seeds", "2", "--layer", "4",
                 "--fractions", "0.5,1"])
    out = capsys.readouterr().out
    assert code == 0 and "break-even fraction" in out and "data_saved_x" in out
