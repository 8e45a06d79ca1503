import pytest

from tests.study.conftest import SPEC, write_study
from transferscope import InputError
from transferscope.study import load_spec


def test_spec_loads_with_defaults(study_dir):
    spec = load_spec(study_dir)
    assert spec.name == "tiny" and spec.seeds == 2 and spec.train.epochs == 2
    assert spec.pretrain[0].name == "net-c" and spec.budgets.subsamples == 2
    assert spec.artifacts_dir == study_dir.parent / "tiny-artifacts"


@pytest.mark.parametrize("change,message", [
    (('sources = ["pretrained:net-c", "torch:{d}/net.py:fcn"]', 'sources = ["effnt-lite:0"]'),
     "Unknown model 'effnt-lite:0'.*did you mean 'effnet-lite'"),
    (('strategies = ["full"]', 'strategies = ["fulll"]'), "Unknown strategy 'fulll'"),
    (('targets = ["{d}/a.npz", "{d}/b.npz"]', "targets = []"), "grid would be empty"),
    (("seeds = 2", "seeds = 2\nseedz = 3"), "seedz.*did you mean 'seeds'"),
    (('sources = ["pretrained:net-c", "torch:{d}/net.py:fcn"]', 'sources = ["pretrained:x"]'),
     r"\[\[pretrain\]\] entry named 'x'"),
    (("subsamples = 2", "subsamples = 2\nmax_runs = 3"), "at most budgets.max_runs = 3"),
    (("fractions = [0.5, 1.0]", "fractions = [0.5, 1.5]"), r"fractions in \(0, 1\]"),
    (("epochs = 2\n", "epochs = 2\nepoch = 3\n"), r"\[train\].*'epoch'.*did you mean 'epochs'"),
    (("[train]", "[train"), "valid TOML"),
    (('metrics = ["logme", "hscore_reg"]', 'metrics = []'), "non-empty list for 'metrics'"),
])
def test_spec_errors_are_one_clear_line(tmp_path, change, message):
    path = write_study(tmp_path, SPEC.replace(*change))
    with pytest.raises(InputError, match=message) as info:
        load_spec(path)
    assert "\n" not in str(info.value)


def test_missing_spec_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")


@pytest.mark.parametrize("change,message", [
    (("seeds = 2", 'seeds = "3"'), "expected seeds to be an integer, got '3'"),
    (("seeds = 2", "seeds = 2.7"), "expected seeds to be an integer, got 2.7"),
    (("seeds = 2", "seeds = true"), "expected seeds to be an integer, got True"),
    (("fractions = [0.5, 1.0]", 'fractions = ["a"]'), "numbers in \\(0, 1\\] for fractions"),
    (("epochs = 2\n", "epochs = 2.5\n"), r"\[train\]: expected epochs to be an integer"),
    (("subsamples = 2", 'subsamples = "2"'), r"\[budgets\]: expected subsamples"),
    (('name = "tiny"', "name = 3"), "name to be a string"),
    (("[train]", '[strategy_options.full]\nlr = "fast"\n\n[train]'),
     "strategy 'full': expected lr to be a number, got 'fast'"),
])
def test_spec_types_are_checked_before_anything_runs(tmp_path, change, message):
    path = write_study(tmp_path, SPEC.replace(*change))
    with pytest.raises(InputError, match=message) as info:
        load_spec(path)
    assert "\n" not in str(info.value)
