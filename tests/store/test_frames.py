"""``to_frame()`` on runs, finetune results, training histories, learning curves and study
evaluations: one row per unit, checked against the object's own fields."""

import sys

import numpy as np
import pytest

from transferscope import InputError
from transferscope.errors import OptionalDependencyError
from transferscope.store.export import flatten, run_name

pd = pytest.importorskip("pandas")


def _same(value, expected):
    if isinstance(expected, float) and np.isnan(expected):
        return isinstance(value, float) and np.isnan(value)
    return value == expected


def test_runs_frame_is_one_row_per_run_with_its_fields(recorded):
    store = recorded.store
    runs = store.list()
    df = store.to_frame()
    assert list(df["id"]) == [r["id"] for r in runs]
    assert list(df.columns[:4]) == ["id", "name", "run_key", "study"]
    for (_, row), r in zip(df.iterrows(), runs, strict=True):
        assert row["name"] == run_name(r) and row["state"] == r["state"]
        assert row["run_key"] == r["run_key"] and row["seed"] == r["seed"]
        for k, v in (r["tags"] or {}).items():
            assert v is None or row[f"tags.{k}"] == v
        for k, v in flatten(r["config"]).items():
            assert row[f"config.{k}"] == v
        for k, v in r["metrics"].items():
            if isinstance(v, (int, float)):
                assert row[f"metrics.{k}"] == v
            else:  # lists (per-sample correctness, curves, score rows) are left out
                assert f"metrics.{k}" not in df.columns
        assert row["timings.wall_s"] == r["timings"]["wall_s"]
    saved = [r for r in runs if r["artifacts"]]
    assert list(df["artifacts.model_dir"].dropna()) == [saved[0]["artifacts"]["model_dir"]]
    study = store.to_frame(study="pair", state="finished")
    assert list(study["id"]) == [r["id"] for r in store.list(study="pair", state="finished")]
    assert set(study["study"]) == {"pair"}


def test_runs_frame_with_epochs_is_one_row_per_stored_epoch(recorded):
    store = recorded.store
    df = store.to_frame(epochs=True)
    expected = [(r, e) for r in store.list() for e in store.epochs_of(r["id"])]
    assert len(df) == len(expected) > 0
    assert list(df.columns[:7]) == ["id", "name", "run_key", "study", "state", "seed", "epoch"]
    for (_, row), (r, e) in zip(df.iterrows(), expected, strict=True):
        assert row["id"] == r["id"] and row["tags.arm"] == (r["tags"] or {}).get("arm")
        for k, v in e.items():
            assert _same(row[k], v)


def test_finetune_result_frame_per_arm_and_per_epoch(recorded):
    res = recorded.trained
    df = res.to_frame()
    assert list(df["arm"]) == [a["arm"] for a in res.arms] == ["transfer", "scratch"]
    for (_, row), arm in zip(df.iterrows(), res.arms, strict=True):
        for k, v in arm.items():
            assert _same(row[k], v)
        assert (row["gain"], row["gain_lo"], row["gain_hi"]) == tuple(res.gain)  # a Gain
        assert _same(row["mde"], res.gain.mde) and row["reading"] == res.reading
        assert row["verdict"] == res.verdict and _same(row["time_saved_s"], res.time_saved_s)
    assert df.attrs["rule"] == res.rule
    epochs = res.to_frame("epoch")
    expected = [(arm, seed, e) for (arm, seed), h in res.histories.items() for e in h.epochs]
    assert len(epochs) == len(expected) > 0  # the transfer seeds trained by this call
    for (_, row), (arm, seed, e) in zip(epochs.iterrows(), expected, strict=True):
        assert (row["arm"], row["seed"]) == (arm, seed)
        for k, v in e.items():
            assert _same(row[k], v)
    assert recorded.saved.to_frame("epoch").empty  # every run reused: no histories
    with pytest.raises(InputError, match="Expected level 'arm' or 'epoch', got 'seed'"):
        res.to_frame("seed")


def test_history_frame_marks_the_selected_epoch(recorded):
    (hist, *_) = recorded.trained.histories.values()
    df = hist.to_frame()
    assert list(df["epoch"]) == [e["epoch"] for e in hist.epochs]
    assert list(df["val_acc"]) == [e["val_acc"] for e in hist.epochs]
    assert list(df["selected"]) == [e["epoch"] == hist.best_epoch for e in hist.epochs]
    assert df["selected"].sum() == 1


def test_learning_curves_frame_is_one_row_per_fraction():
    from transferscope.verdict import LearningCurves, summarise_curves

    pts = [{"fraction": f, "n_train": n, "transfer_acc": t, "scratch_acc": s, "gain": t - s,
            "transfer_best_s": tt, "scratch_best_s": st}
           for f, n, t, s, tt, st in [(1.0, 100, 0.86, 0.90, 3.0, 10.0),
                                      (0.1, 10, 0.80, 0.50, 1.0, 2.0),
                                      (0.5, 50, 0.85, 0.80, 2.0, 6.0)]]
    curves = summarise_curves(pts)
    assert isinstance(curves, LearningCurves) and isinstance(curves, dict)
    df = curves.to_frame()
    assert list(df["fraction"]) == [p["fraction"] for p in curves["points"]] == [0.1, 0.5, 1.0]
    for (_, row), p in zip(df.iterrows(), curves["points"], strict=True):
        for k, v in p.items():
            assert _same(row[k], v)
    assert df.attrs["break_even_fraction"] == curves["break_even_fraction"]


def test_study_evaluation_frames(recorded):
    from transferscope.study.evaluate import StudyEvaluation

    ev = recorded.evaluation
    assert isinstance(ev, StudyEvaluation)
    metrics = ev.to_frame()
    assert list(metrics[["strategy", "metric"]].itertuples(index=False, name=None)) == [
        (m["strategy"], m["metric"]) for m in ev["metrics"]]
    for (_, row), m in zip(metrics.iterrows(), ev["metrics"], strict=True):
        for k, v in m.items():
            assert _same(row[k], v)
    pairs = ev.to_frame("pairs")
    assert len(pairs) == len(ev["pairs"]) == 1
    for k, v in ev["pairs"][0].items():
        assert _same(pairs.iloc[0][k], v)
    assert _same(pairs.attrs["share_negative"], ev["share_negative"])
    advice = ev.to_frame("advice")  # one pair: too few targets to hold one out
    assert len(advice) == 0 and "leave-one-target-out needs at least 2" in ev["advice"]["note"]
    with pytest.raises(InputError,
                       match="Expected table 'metrics', 'pairs' or 'advice', got 'runs'"):
        ev.to_frame("runs")


def test_missing_pandas_names_the_extra(recorded, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    for make in (recorded.store.to_frame, recorded.trained.to_frame,
                 recorded.evaluation.to_frame):
        with pytest.raises(OptionalDependencyError,
                           match=r"to_frame\(\) needs .*pip install 'transferscope\[tables\]'"):
            make()
