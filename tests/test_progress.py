"""Progress (transferscope.progress): log lines where stderr is not a terminal, one line per
epoch of a fine-tuning run, --log-every, --quiet, extraction counts and a study's runs."""

import io
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from tests.fast import FAST_FINETUNE
from tests.study.conftest import PAIR_SPEC
from transferscope import progress
from transferscope.cli import main
from transferscope.data import Dataset
from transferscope.errors import InputError

NET = '''
import torch
from torch import nn

def fcn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                         nn.Flatten(), nn.Linear(4, 2))
'''

EPOCH = re.compile(r"(?:^|> )(?P<label>\w[\w ]* seed \d+): epoch (?P<epoch>\d+)/(?P<total>\d+) "
                   r"train_loss=(?P<train_loss>\S+) train_acc=(?P<train_acc>\S+) "
                   r"val_loss=(?P<val_loss>\S+) val_acc=(?P<val_acc>\S+) "
                   r"seconds=(?P<seconds>\S+)")


@pytest.fixture
def log_lines(caplog):
    """Progress on, as log lines (stderr is not a terminal), at the default interval; returns
    a function giving the progress lines logged so far."""
    caplog.set_level(logging.INFO, logger="transferscope")
    with progress.settings(enabled=True, mode="log", log_every=30):
        yield lambda: [r.getMessage() for r in caplog.records
                       if r.name == progress.LOG.name]


def series(n=60):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    t = np.linspace(0, 1, 24)
    x = np.sin(2 * np.pi * (y[:, None] + 1) * t) + 0.3 * rng.standard_normal((n, 24))
    return Dataset("toy", "series", x[:, None, :].astype(np.float32), y)


@pytest.fixture
def net(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    return f"torch:{tmp_path / 'net.py'}:fcn"


def _epoch_lines(lines):
    return [m.groupdict() for m in map(EPOCH.search, lines) if m]


def test_finetune_logs_one_line_per_epoch_equal_to_its_history(log_lines, net):
    from transferscope.finetune import TrainConfig, finetune

    cfg = TrainConfig(min_steps=0, lr_grid=(1.0,),
                      epochs=3, batch_size=16, patience=10, device="cpu")
    res = finetune(series(), net, "full", splits=1, seeds=2, config=cfg)
    got = _epoch_lines(log_lines())
    want = []
    for s in range(2):  # seed by seed, both arms on each seed's split
        for arm in ("transfer", "scratch"):
            label = f"{'transfer full' if arm == 'transfer' else 'scratch'} seed {s}"
            want += [(label, e) for e in res.histories[arm, s].epochs]
    assert len(got) == len(want) == 4 * 3
    for line, (label, row) in zip(got, want, strict=True):
        assert line["label"] == label
        assert int(line["epoch"]) == row["epoch"] + 1 and int(line["total"]) == 3
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert float(line[key]) == pytest.approx(row[key], abs=5e-5), key
        assert float(line["seconds"]) == pytest.approx(row["seconds"], abs=0.05)


def test_cli_finetune_epoch_lines_match_the_store_and_quiet_silences_them(tmp_path, net, capsys):
    from transferscope.store import SQLRunStore

    np.savez(tmp_path / "s.npz", X=series().inputs, y=series().labels)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    argv = ["finetune", *FAST_FINETUNE, "--data", str(tmp_path / "s.npz"), "--model", net,
            "--strategy", "full", "--seeds", "1", "--epochs", "2", "--batch-size", "16",
            "--device", "cpu"]
    with progress.settings(enabled=True, mode="log"):
        assert main([*argv, "--db", url]) == 0
        err = capsys.readouterr().err
        got = _epoch_lines(err.splitlines())
        store = SQLRunStore(url)
        runs = sorted(store.list(), key=lambda r: r["tags"]["arm"] != "transfer")
        want = [row for r in runs for row in store.epochs_of(r["id"])]
        assert [g["label"] for g in got] == ["transfer full seed 0"] * 2 + ["scratch seed 0"] * 2
        assert [int(g["epoch"]) for g in got] == [e["epoch"] + 1 for e in want] == [1, 2, 1, 2]
        for g, row in zip(got, want, strict=True):
            assert float(g["val_loss"]) == pytest.approx(row["val_loss"], abs=5e-5)
            assert float(g["val_acc"]) == pytest.approx(row["val_acc"], abs=5e-5)
        assert all(line.startswith("tscope: ") for line in err.splitlines())

        assert main([*argv, "--no-db", "--quiet"]) == 0
        quiet = capsys.readouterr()
        assert quiet.err == "" and "gain" in quiet.out  # results still printed


def test_extraction_lines_count_samples_and_batches(log_lines, net, tmp_path):
    from transferscope.features import FeatureCache, extract_features

    data = series(50)
    with progress.settings(log_every=0):  # every update: one line per batch
        extract_features(net, data, cache=FeatureCache(tmp_path / "c"), batch_size=16,
                         device="cpu")
    lines = [ln for ln in log_lines() if ln.startswith("features ")]
    status = [re.search(r": (\d+)/50 samples .*batches (\d+)$", ln) for ln in lines[1:-1]]
    assert lines[0].endswith("start (50 samples)")
    assert [(int(m[1]), int(m[2])) for m in status] == [(16, 1), (32, 2), (48, 3), (50, 4)]
    assert re.search(r"done, 50/50 samples in", lines[-1])

    data = series(52)  # another dataset: not cached; at the default 30 s, no status line
    extract_features(net, data, cache=FeatureCache(tmp_path / "c"), batch_size=16,
                     device="cpu")
    lines = [ln for ln in log_lines()[len(lines):] if ln.startswith("features ")]
    assert len(lines) == 2 and "start" in lines[0] and "done, 52/52" in lines[1]


def test_log_every_zero_logs_every_update_and_nesting_prefixes_the_outer_unit(log_lines):
    with progress.settings(log_every=0):
        with progress.unit("outer", 2, "run") as outer:
            for _ in range(2):
                with progress.unit("inner", 3, "step", transient=True) as inner:
                    for _ in range(3):
                        inner.update()
                outer.update()
    lines = log_lines()
    inner = [ln for ln in lines if "inner:" in ln]
    assert len(inner) == 6  # transient: status lines only, every one at log_every=0
    assert inner[0].startswith("outer [0/2 runs] > inner: 1/3 steps (33%)")
    assert inner[-1].startswith("outer [1/2 runs] > inner: 3/3 steps (100%)")
    assert lines[0] == "outer: start (2 runs)" and lines[-1].startswith("outer: done, 2/2 runs")
    assert sum(ln.startswith("outer: 1/2 runs") or ln.startswith("outer: 2/2 runs")
               for ln in lines) == 2


def test_disabled_and_bars(log_lines, monkeypatch):
    with progress.settings(enabled=False), progress.unit("nothing", 2) as p:
        p.update()
        p.line("never")
    assert log_lines() == []
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    with progress.settings(mode="bar"), progress.unit("outer", 1, "run") as outer:
        with progress.unit("inner", 2, "step", transient=True) as inner:
            inner.update(2)
        outer.line("a line above the bars")
        outer.update()
    text = err.getvalue()
    assert "outer: a line above the bars\n" in text and "inner" in text and "1/1" in text
    assert log_lines() == []  # bars, not log lines


def test_negative_log_every_is_a_one_line_error(capsys, tmp_path):
    assert main(["study", "status", str(tmp_path / "none.toml"), "--log-every", "-5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tscope: error: Expected --log-every")
    assert "got -5" in err and "pass 0" in err
    with pytest.raises(InputError, match="got -1"):
        progress.configure(log_every=-1)
    assert progress.current().log_every >= 0


# the one-pair study with one seed, one epoch and no subsampled scores
SPEC = (PAIR_SPEC.replace('name = "pair"', 'name = "tiny"').replace("seeds = 2", "seeds = 1")
        .replace("epochs = 2", "epochs = 1").replace("subsamples = 2", "subsamples = 0"))


def test_study_logs_runs_done_of_total(tmp_path, capsys):
    from tests.study.conftest import write_study

    path = write_study(Path(tmp_path), SPEC)
    with progress.settings(enabled=True, mode="log"):
        assert main(["study", "run", str(path)]) == 0
        err = capsys.readouterr().err.splitlines()
        runs = [ln for ln in err if re.match(r"tscope: study tiny: \d/3 runs done", ln)]
        assert [ln.split()[3] for ln in runs] == ["1/3", "2/3", "3/3"]
        assert all("0 failed" in ln and "elapsed, ETA" in ln and "finished" in ln
                   for ln in runs)
        assert err[0] == "tscope: study tiny: start (3 runs)"
        assert any(re.match(r"tscope: study tiny: done, 3/3 runs in", ln) for ln in err)
        # a run in this process shows its epochs under the study's line
        # (the scratch baseline first, then the scores, then the transfer run: a pair is
        # complete as soon as its transfer run is)
        assert any(ln.startswith("tscope: study tiny [0/3 runs] > scratch ") and "epoch 1/1"
                   in ln for ln in err)
        assert any(ln.startswith("tscope: study tiny [2/3 runs] > transfer ") and "epoch 1/1"
                   in ln for ln in err)
        assert main(["study", "run", str(path)]) == 0  # all finished: said, nothing run
        err = capsys.readouterr().err
        assert "3 of 3 runs already finished (reused)" in err
