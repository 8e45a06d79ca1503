"""One run identity: tscope finetune and tscope study reuse each other's runs, and a study is
evaluated and reported from its store alone."""

import json

import pytest

from tests.study.conftest import PAIR_SPEC as SPEC
from tests.study.conftest import write_study
from transferscope.store import open_store
from transferscope.store.export import run_verdicts
from transferscope.study import evaluate, load_spec, run_study

pytest.importorskip("sqlalchemy")


def _finetune(spec, **kw):
    from transferscope.data import load_dataset
    from transferscope.finetune import finetune
    from transferscope.store import open_store

    kw.setdefault("splits", spec.splits)
    kw.setdefault("strategy_options", spec.strategy_options.get("full"))
    kw.setdefault("baseline_options", spec.strategy_options.get("scratch"))
    return finetune(load_dataset(spec.targets[0]), spec.sources[0], "full",
                    seeds=spec.seeds, config=spec.train, store=open_store(spec.db), **kw)


def test_a_finetune_run_is_reused_by_the_study_and_counts_in_its_results(tmp_path):
    spec = load_spec(write_study(tmp_path, SPEC))
    first = _finetune(spec)
    assert len(first.histories) == 4  # 2 seeds x 2 arms trained now
    summary = run_study(spec)["main"]
    assert summary["planned"] == 1 + 2 + 2  # scores, transfer seeds, scratch seeds
    assert summary["ran"] == 1 and summary["reused"] == 4  # only the scores ran
    (pair,) = evaluate(spec)["pairs"]
    assert pair["gain"] == pytest.approx(first.gain[0])
    assert (pair["gain_lo"], pair["gain_hi"]) == pytest.approx(first.gain[1:])


def test_a_study_run_is_reused_by_finetune(tmp_path):
    spec = load_spec(write_study(tmp_path, SPEC))
    run_study(spec)
    again = _finetune(spec)
    assert again.histories == {}  # every run of both arms came from the store
    (pair,) = evaluate(spec)["pairs"]
    assert again.gain[0] == pytest.approx(pair["gain"])
    changed = _finetune(spec, strategy_options={"backbone_lr": 5e-4})
    assert len(changed.histories) == 2  # another transfer config: trained; scratch reused


def test_evaluate_reads_the_store_without_models_or_data(tmp_path):
    spec = load_spec(write_study(tmp_path, SPEC))
    run_study(spec)
    before = evaluate(spec)
    (tmp_path / "net.py").unlink()  # no model code ...
    (tmp_path / "a.npz").unlink()  # ... and no data left
    after = evaluate(spec)
    assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True)  # NaN-safe
    assert len(after["pairs"]) == 1


def test_evaluate_counts_only_the_grid_as_it_is_now(tmp_path):
    spec = load_spec(write_study(tmp_path, SPEC))
    run_study(spec)
    longer = load_spec(write_study(tmp_path, SPEC.replace("epochs = 2", "epochs = 3")))
    assert evaluate(longer)["pairs"] == []  # the runs trained 2 epochs are not this grid
    for splits in ("splits = 3", "# splits unset: 5 folds for the 60 samples"):
        folded = load_spec(write_study(tmp_path, SPEC.replace("splits = 1", splits)))
        assert evaluate(folded)["pairs"] == []  # one split is not cross-validation
    fewer = load_spec(write_study(tmp_path, SPEC.replace("seeds = 2", "seeds = 1")))
    (pair,) = evaluate(fewer)["pairs"]
    assert pair["seeds"] == 1


# learning rates and epochs at which the toy arms leave chance level, so the gains differ from 0
LEARNING = ("[budgets]", "[strategy_options.full]\nlr = 0.03\nbackbone_lr = 0.01\n\n"
            "[strategy_options.scratch]\nlr = 0.01\nbackbone_lr = 0.01\n\n[budgets]")


def test_a_cross_validated_study_shares_its_runs_and_its_gain_with_finetune(tmp_path):
    spec = load_spec(write_study(tmp_path, SPEC.replace("splits = 1", "splits = 3").replace(
        "epochs = 2", "epochs = 10").replace(*LEARNING)))
    summary = run_study(spec)["main"]
    assert summary["planned"] == 1 + 2 * (2 * 3)  # scores; 2 arms x (2 seeds x 3 folds)
    assert summary["ran"] == summary["planned"] and not summary["failed"]
    (pair,) = evaluate(spec)["pairs"]
    assert pair["seeds"] == 2 and pair["folds"] == 3 and pair["gain_lo"] < pair["gain_hi"]
    assert len(pair["transfer_runs"]) == len(pair["scratch_runs"]) == 6
    again = _finetune(spec)  # splits = 3, as the spec says
    assert again.histories == {}  # every fold of every seed of both arms came from the store
    assert pair["gain"] == pytest.approx(again.gain[0])
    assert (pair["gain_lo"], pair["gain_hi"]) == pytest.approx(again.gain[1:])
    assert pair["mde"] == pytest.approx(again.gain.mde) and pair["reading"] == again.reading
    assert pair["verdict"] == again.verdict
    assert pair["transfer_acc"] == pytest.approx(again.arms[0]["test_acc"])
    # every sample of the 60 is tested once per seed, in both the study and finetune
    assert again.gain.n_test == 60 and again.gain.n_seeds == 2
    # the store's verdict tags pair the same runs: every fold of both seeds
    verdicts = run_verdicts(open_store(spec.db).list())
    for run_id in pair["transfer_runs"]:
        assert verdicts[run_id]["seeds"] == 2 and verdicts[run_id]["verdict"] == pair["verdict"]
        assert verdicts[run_id]["gain"] == pytest.approx(pair["gain"])
        assert verdicts[run_id]["gain_lo"] == pytest.approx(pair["gain_lo"])


def test_the_budget_check_is_planned_evaluated_and_shared_like_finetune(tmp_path):
    spec = load_spec(write_study(tmp_path, SPEC.replace(
        "splits = 1", "splits = 1\ncheck_budget = true").replace(
        "epochs = 2", "epochs = 10").replace(*LEARNING)))
    summary = run_study(spec)["main"]
    assert summary["planned"] == 1 + 2 + 2 + 2  # scores; transfer, scratch, scratch x2 budget
    (pair,) = evaluate(spec)["pairs"]
    again = _finetune(spec, check_budget=True)
    assert again.histories == {}
    check = again.budget_check
    assert pair["budget_verdict"] == check["verdict"] and pair["budget_holds"] == check["holds"]
    assert pair["budget_gain"] == pytest.approx(check["gain"].gain)
    assert (pair["budget_gain_lo"], pair["budget_gain_hi"]) == pytest.approx(
        tuple(check["gain"])[1:])
    assert pair["budget_acc"] == pytest.approx(check["baseline_acc"])
    assert len(pair["budget_runs"]) == 2 and not set(pair["budget_runs"]) & set(
        pair["scratch_runs"])


def test_a_choice_at_the_grid_edge_is_in_the_study_as_in_finetune(tmp_path):
    from transferscope.finetune.run import grid_edges
    from transferscope.study.evaluate import edge_summary

    spec = load_spec(write_study(tmp_path, SPEC.replace("lr_grid = [1.0]",
                                                        "lr_grid = [0.5, 1.0]")))
    run_study(spec)
    (pair,) = evaluate(spec)["pairs"]
    again = _finetune(spec)  # the same runs, from the store
    assert again.histories == {}
    chosen = {arm: [float(v) for v in row["lr_scale"].split(",")]
              for arm, row in zip(("transfer", "scratch"), again.arms, strict=True)}
    assert pair["lr_edge"] == grid_edges(chosen, (0.5, 1.0))
    # with two multipliers every choice is an edge: the seeds agree (said) or split (not)
    said = [a for a, c in chosen.items() if len(set(c)) == 1]
    assert [line.split(":")[0] for line in pair["lr_edge"]] == said
    summary = edge_summary([pair])
    assert (summary is None) == (not said)
    if said:
        assert summary.startswith("1 of 1 cells had an arm choose the edge")
