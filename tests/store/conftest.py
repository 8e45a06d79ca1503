"""A small real run store, recorded once per session: a tiny study (scores, two transfer and
two scratch seeds) and two ``finetune`` calls on its target, one that saves a model (its runs
reused from the study) and one with other options (two transfer runs trained now)."""

from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session")
def recorded(tmp_path_factory):
    pytest.importorskip("sqlalchemy")
    from tests.study.conftest import PAIR_SPEC, write_study
    from transferscope.data import load_dataset
    from transferscope.finetune import finetune
    from transferscope.store import open_store
    from transferscope.study import evaluate, load_spec, run_study

    d = tmp_path_factory.mktemp("recorded")
    spec = load_spec(write_study(d, PAIR_SPEC))
    run_study(spec)
    store = open_store(spec.db)
    data = load_dataset(spec.targets[0])
    saved = finetune(data, spec.sources[0], "full", splits=1, seeds=spec.seeds, config=spec.train,
                     store=store, save_dir=d / "saved")
    trained = finetune(data, spec.sources[0], "full", splits=1, seeds=spec.seeds, config=spec.train,
                       store=store, strategy_options={"backbone_lr": 5e-4})
    return SimpleNamespace(dir=d, spec=spec, store=store, saved=saved, trained=trained,
                           evaluation=evaluate(spec))
