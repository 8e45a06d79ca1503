"""One run identity: tscope finetune and tscope study reuse each other's runs, and a study is
evaluated and reported from its store alone."""

import json

import pytest

from tests.study.conftest import PAIR_SPEC as SPEC
from tests.study.conftest import write_study
from transferscope.study import evaluate, load_spec, run_study

pytest.importorskip("sqlalchemy")


def _finetune(spec, **kw):
    from transferscope.data import load_dataset
    from transferscope.finetune import finetune
    from transferscope.store import open_store

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
    fewer = load_spec(write_study(tmp_path, SPEC.replace("seeds = 2", "seeds = 1")))
    (pair,) = evaluate(fewer)["pairs"]
    assert pair["seeds"] == 1
