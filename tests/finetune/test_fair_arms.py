"""Issue 15, fair arms and enough evidence: the step floor holds for both arms, the learning
rate is chosen on validation only, a given test set and cross-validation folds never reach
training or selection, the budget check trains the doubled arm, and the verdict's interval
and power statement hold their stated levels in simulations with a known effect."""

import numpy as np
import pytest

from tests.finetune.test_verdict_and_run import NET, series
from transferscope.data import Dataset
from transferscope.finetune import TrainConfig, finetune
from transferscope.verdict import paired_gain, stack_correctness


@pytest.fixture
def model(tmp_path):
    (tmp_path / "fcn.py").write_text(NET)
    return f"torch:{tmp_path / 'fcn.py'}:fcn"


def cfg(**kw):
    base = dict(epochs=1, batch_size=16, patience=1, seed=0, device="cpu", min_steps=0,
                lr_grid=(1.0,), augment="none")
    return TrainConfig(**{**base, **kw})


def test_step_floor_holds_for_both_arms_and_early_stopping_waits(model):
    # 90 samples: 54 train at batch 16 = 4 steps an epoch; 1 epoch would be 4 steps
    res = finetune(series(), model, "full", seeds=1, splits=1, config=cfg(min_steps=30),
                   layer="4")
    assert len(res.histories) == 2
    for hist in res.histories.values():
        assert hist.steps >= 30  # patience 1 could not end it earlier
        assert hist.budget_epochs == 8  # ceil(30 / 4): the same for both arms
    assert [a["steps"] for a in res.arms] == [32.0, 32.0]


def test_budget_epochs_rule():
    from transferscope.finetune.trainer import budget_epochs

    assert budget_epochs(cfg(epochs=20, batch_size=32, min_steps=500), 120) == 125
    assert budget_epochs(cfg(epochs=20, batch_size=32, min_steps=500), 10_000) == 20
    assert budget_epochs(cfg(epochs=3, min_steps=0), 120) == 3


def test_the_floor_counts_the_steps_of_every_stage(model):
    # LP-FT: a 1-epoch linear-probe stage, then fine-tuning; 30 steps in all, not per stage
    res = finetune(series(), model, "lp_ft", seeds=1, splits=1, layer="4",
                   strategy_options={"probe_epochs": 1}, config=cfg(epochs=2, min_steps=30))
    hist = res.histories[("transfer", 0)]
    stages = [e["stage"] for e in hist.epochs]
    assert stages[0] == "linear_probe" and stages[-1] == "full"
    assert 30 <= hist.steps <= 32 and hist.budget_epochs == 8
    assert res.histories[("scratch", 0)].budget_epochs == 8


def test_learning_rate_is_chosen_on_validation_and_test_labels_change_nothing(model):
    data = series(90)
    test = series(40)
    flipped = Dataset("flipped", "series", test.inputs, 1 - test.labels)
    kw = dict(seeds=1, config=cfg(epochs=3, lr_grid=(0.1, 1.0, 10.0)), layer="4")
    a = finetune(data, model, "full", test_data=test, **kw)
    b = finetune(data, model, "full", test_data=flipped, **kw)
    for key, ha in a.histories.items():
        hb = b.histories[key]
        assert [e["val_acc"] for e in ha.epochs] == [e["val_acc"] for e in hb.epochs]
        assert ha.lr_scale == hb.lr_scale
        search = ha.lr_search
        assert [s["lr_scale"] for s in search] == [0.1, 1.0, 10.0]
        best = max(search, key=lambda s: (s["val_acc"], -s["val_loss"]))
        assert ha.lr_scale == best["lr_scale"] and ha.best_val_acc == best["val_acc"]
    # the test set decides the test accuracies only: flipped labels flip them
    for ra, rb in zip(a.arms, b.arms, strict=True):
        assert ra["test_acc"] == pytest.approx(1 - rb["test_acc"])
        assert ra["lr_scale"] == rb["lr_scale"]
    assert a.evaluation.startswith("the given test set (40 samples)")


def test_a_given_test_set_never_reaches_training(model, monkeypatch):
    from transferscope.finetune import run

    seen = []
    real = run.train_on_split

    def spy(backend, split, *args, **kw):
        seen.append((split.train[0].shape[0], split.val[0].shape[0],
                     split.test[0].shape[0]))
        return real(backend, split, *args, **kw)

    monkeypatch.setattr(run, "train_on_split", spy)
    data, test = series(60), series(30)
    finetune(data, model, "full", seeds=1, config=cfg(), layer="4", test_data=test)
    # the 60 samples of --data are train (80 %) and validation (20 %); the 30 test samples
    # are only predicted
    assert set(seen) == {(48, 12, 30)}


def test_cross_validation_tests_every_sample_once_per_repetition(model):
    from transferscope.store import open_store

    store = open_store(None)
    res = finetune(series(60), model, "full", seeds=2, splits=3, config=cfg(), layer="4",
                   store=store)
    runs = [r for r in store.list() if r["tags"]["arm"] == "transfer"]
    assert len(runs) == 2 * 3
    for seed in (0, 1):
        mine = [r for r in runs if r["seed"] == seed]
        assert sorted(r["config"]["fold"] for r in mine) == [0, 1, 2]
        assert {r["config"]["split_seed"] for r in mine} == {seed}  # new folds per repetition
        tested = np.concatenate([r["metrics"]["test_index"] for r in mine])
        assert sorted(tested) == list(range(60))  # every sample once
    folds0 = {r["config"]["fold"]: set(r["metrics"]["test_index"]) for r in runs
              if r["seed"] == 0}
    folds1 = {r["config"]["fold"]: set(r["metrics"]["test_index"]) for r in runs
              if r["seed"] == 1}
    assert folds0 != folds1
    assert res.gain.n_test == 60 and res.gain.n_seeds == 2
    assert "3-fold cross-validation" in res.evaluation


def test_small_data_is_cross_validated_by_default():
    from transferscope.finetune.run import resolve_folds

    assert resolve_folds(None, 200, has_test=False) == 5
    assert resolve_folds(None, 5000, has_test=False) == 0
    assert resolve_folds(None, 200, has_test=True) == 0
    assert resolve_folds(1, 200, has_test=False) == 0


def test_check_budget_trains_the_baseline_at_twice_the_budget(model):
    res = finetune(series(), model, "full", seeds=1, splits=1, layer="4",
                   config=cfg(min_steps=12, patience=2), check_budget=True)
    assert [a["arm"] for a in res.arms] == ["transfer", "scratch", "scratch x2 budget"]
    doubled = res.histories[("scratch x2 budget", 0)]
    assert doubled.steps >= 24 and doubled.budget_epochs == 6  # 2 x ceil(12 / 4)
    assert res.histories[("scratch", 0)].budget_epochs == 3
    check = res.budget_check
    assert check["verdict"] in ("POSITIVE", "NEGATIVE", "INCONCLUSIVE")
    assert check["holds"] == (check["verdict"] == res.verdict)
    assert check["baseline_acc"] == res.arms[2]["test_acc"]


def test_stack_correctness_lines_folds_up_by_test_position():
    runs = [[{"test_index": [2, 0], "test_correct": [1, 0]}, {"test_index": [1],
                                                               "test_correct": [1]}],
            [{"test_index": [1, 2], "test_correct": [0, 0]}, {"test_index": [0],
                                                               "test_correct": [1]}]]
    assert stack_correctness(runs).tolist() == [[0, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="same samples"):
        stack_correctness([runs[0], [{"test_index": [0, 1], "test_correct": [1, 1]}]])


# -- the statistics, against simulations with a known effect ----------------------------------

def simulate(rng, effect, n_test, seeds, base=0.7, seed_sd=0.02, n_rep=1):
    """Correctness of both arms: shared per-sample difficulty, per-seed training noise."""
    out = []
    for _ in range(n_rep):
        hard = rng.normal(0, 1.0, n_test)  # some samples are hard for both arms
        logit = np.log(base / (1 - base)) - hard
        pt = 1 / (1 + np.exp(-(logit[None] + rng.normal(0, 1, (seeds, 1)) * seed_sd * 5)))
        ps = 1 / (1 + np.exp(-(logit[None] + rng.normal(0, 1, (seeds, 1)) * seed_sd * 5)))
        pt = np.clip(pt + effect, 0, 1)
        out.append(((rng.random(pt.shape) < pt).astype(int),
                    (rng.random(ps.shape) < ps).astype(int)))
    return out


def test_power_statement_a_known_effect_of_0_1():
    rng = np.random.default_rng(0)
    (big,) = simulate(rng, 0.1, 2000, 3)
    g = paired_gain(*big)
    assert g.low > 0 and g.mde < 0.1 and g.reading() == "effect"
    (small,) = simulate(rng, 0.1, 40, 3)
    g = paired_gain(*small)
    assert g.low < 0 < g.high and g.reading() == "too little evidence"
    assert g.mde > 0.1  # the statement says +0.1 is below what 40 samples can detect
    assert "with 40 test samples and 3 seeds, gains smaller than +-" in g.power_statement()


def test_power_statement_matches_the_simulated_power():
    """At a true gain equal to the stated minimum detectable effect, the verdict is POSITIVE
    in about 80 % of repeated experiments (the stated power)."""
    rng = np.random.default_rng(1)
    mde = np.median([paired_gain(t, s).mde for t, s in simulate(rng, 0.0, 300, 5, n_rep=50)])
    hits = [paired_gain(t, s).low > 0 for t, s in simulate(rng, mde, 300, 5, n_rep=300)]
    assert 0.7 <= np.mean(hits) <= 0.9


def test_no_effect_needs_a_narrow_interval():
    rng = np.random.default_rng(2)
    (big,) = simulate(rng, 0.0, 20000, 5, seed_sd=0.0)
    g = paired_gain(*big)
    assert g.reading() == "no effect"  # +-0.02 equivalence, interval well inside
    (small,) = simulate(rng, 0.0, 100, 3)
    assert paired_gain(*small).reading() == "too little evidence"


def test_three_seed_interval_covers_at_its_level_with_seed_noise():
    """Coverage of the true gain (effect 0.05) by the 95 % interval from 3 seeds, when
    training noise between seeds is large: at least 93 % of 400 simulated experiments."""
    rng = np.random.default_rng(3)
    covered = []
    for t, s in simulate(rng, 0.05, 500, 3, seed_sd=0.06, n_rep=400):
        # the truth of this experiment: the expected gain on its test set
        g = paired_gain(t, s)
        covered.append(g.low <= 0.05 <= g.high)
    assert np.mean(covered) >= 0.93


def test_a_choice_at_the_edge_of_the_grid_is_said():
    from transferscope.finetune.run import edge_notes

    class Run:
        def __init__(self, m):
            self.metrics = {"lr_scale": m}

    notes = edge_notes({"transfer": [Run(3.0)] * 3, "scratch": [Run(1.0), Run(0.3), Run(3.0)]},
                       (0.3, 1.0, 3.0))
    assert len(notes) == 1 and notes[0].startswith("transfer: 3 of 3 runs chose the largest")
    assert "--lr-grid 0.9,3,9" in notes[0]
    assert edge_notes({"transfer": [Run(1.0)]}, (1.0,)) == []


def test_arms_that_agree_everywhere_have_not_shown_they_are_equal():
    same = np.tile(np.arange(40) % 2, (3, 1))
    g = paired_gain(same, same)
    assert g.gain == 0 and g.low < -0.05 and g.high > 0.05  # rule of three: se >= sqrt(3)/40
    assert g.reading() == "too little evidence"
    big = np.tile(np.arange(20000) % 2, (3, 1))
    assert paired_gain(big, big).reading() == "no effect"


def test_cli_states_the_protocol_power_and_budget_check(tmp_path, capsys, model):
    from transferscope.cli import main

    for name, d in (("s", series(60)), ("t", series(30))):
        np.savez(tmp_path / f"{name}.npz", X=d.inputs, y=d.labels)
    code = main(["finetune", "--data", str(tmp_path / "s.npz"), "--test-data",
                 str(tmp_path / "t.npz"), "--model", model, "--strategy", "full", "--layer", "4",
                 "--seeds", "2", "--epochs", "1", "--min-steps", "8", "--lr-grid", "1,3",
                 "--check-budget", "--no-db", "--batch-size", "16"])
    out = capsys.readouterr().out
    assert code == 0
    assert "test samples: the given test set (30 samples), the same for every seed" in out
    assert "with 30 test samples and 2 seeds, gains smaller than +-" in out
    assert "at least 8 optimiser steps" in out and "x1/3 of its arm's rates" in out
    assert "budget check: scratch at twice the budget reaches" in out
    assert "scratch x2 budget" in out


def test_learning_curves_carry_the_budget_check(model):
    from transferscope.finetune import learning_curves

    curves = learning_curves(series(), model, "full", fractions=(0.5, 1.0), seeds=1,
                             splits=1, layer="4", config=cfg(min_steps=4),
                             check_budget=True)
    assert [p["fraction"] for p in curves["points"]] == [0.5, 1.0]
    for p in curves["points"]:
        assert p["budget_verdict"] in ("POSITIVE", "NEGATIVE", "INCONCLUSIVE")
        assert p["budget_holds"] == (p["budget_verdict"] == p["verdict"])
