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


def test_the_protocol_keys_load(tmp_path):
    spec = load_spec(write_study(tmp_path, SPEC.replace("splits = 1", (
        'splits = 1\ncheck_budget = true\nval_data = {{"{d}/a.npz" = "{d}/c.npz"}}\n'
        'test_data = {{"{d}/b.npz" = "{d}/c.npz"}}')).replace("lr_grid = [1.0]", (
        'lr_grid = [0.5, 2]\naugment = "none"')).replace("min_steps = 0", "min_steps = 40")))
    assert spec.splits == 1 and spec.check_budget is True
    assert spec.val_data == {str(tmp_path / "a.npz"): str(tmp_path / "c.npz")}
    assert list(spec.test_data) == [str(tmp_path / "b.npz")]
    assert spec.train.lr_grid == (0.5, 2.0) and spec.train.min_steps == 40
    assert spec.train.augment == "none"
    unset = load_spec(write_study(tmp_path, SPEC.replace("splits = 1", "# splits unset")))
    assert unset.splits is None and unset.check_budget is False and unset.val_data == {}


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
    (("splits = 1", 'splits = "5"'), "expected splits to be an integer \\(or nothing\\), got '5'"),
    (("splits = 1", "splits = 2.5"), "expected splits to be an integer"),
    (("splits = 1", "splits = true"), "expected splits to be an integer.*got True"),
    (("splits = 1", "splits = 0"), "Expected splits a whole number >= 1, got 0"),
    (("splits = 1", "splits = 1\ncheck_budget = 1"),
     "expected check_budget to be true or false, got 1"),
    (("splits = 1", 'splits = 1\nval_data = "v.npz"'),
     "expected val_data to be a table, got 'v.npz'"),
    (("splits = 1", 'splits = 1\ntest_data = ["t.npz"]'), "expected test_data to be a table"),
    (("splits = 1", 'splits = 1\nval_data = {{"{d}/a.npz" = 3}}'),
     "Expected a dataset name or path for val_data of '.*a.npz', got 3"),
    (("splits = 1", 'splits = 1\ntest_data = {{"{d}/a.npzz" = "t.npz"}}'),
     r"Expected test_data only for the study's targets .*got '.*a.npzz'; did you mean "
     r"'.*/a.npz'"),
    (("splits = 1", 'splits = 1\nval_data = {{"c.npz" = "v.npz"}}'),
     "Expected val_data only for the study's targets"),
    (("splits = 1", 'splits = 3\ntest_data = {{"{d}/a.npz" = "t.npz"}}'),
     "Expected splits = 1 \\(or none\\) with test_data"),
    (("splits = 1", "splitz = 3"), "splitz.*did you mean 'splits'"),
    (("min_steps = 0", "min_steps = -1"), "Expected min_steps a whole number >= 0"),
    (("lr_grid = [1.0]", "lr_grid = [1.0, 1.0]"), "Expected lr_grid distinct multipliers"),
    (("lr_grid = [1.0]", 'lr_grid = [1.0]\naugment = "images"'), "Expected augment among"),
])
def test_spec_types_are_checked_before_anything_runs(tmp_path, change, message):
    path = write_study(tmp_path, SPEC.replace(*change))
    with pytest.raises(InputError, match=message) as info:
        load_spec(path)
    assert "\n" not in str(info.value)


def test_width_enters_the_scoring_identity_and_reaches_the_worker(tmp_path):
    from transferscope.study.runner import main_tasks

    plain = load_spec(write_study(tmp_path, SPEC))
    wide = load_spec(write_study(tmp_path,
                                 SPEC.replace("splits = 1", 'splits = 1\nwidth = "none"')))
    # the default: rank's (pca:32, what ranked best on the benchmark)
    assert plain.scoring()["width"] == "pca:32" and wide.scoring()["width"] == "none"
    sources = {s: s for s in plain.sources if not s.startswith("pretrained:")}
    plain.sources = wide.sources = list(sources)
    a = [t for t in main_tasks(plain, sources) if t.tags["kind"] == "scores"]
    b = [t for t in main_tasks(wide, sources) if t.tags["kind"] == "scores"]
    assert a and len(a) == len(b)
    assert all(x.config.key() != y.config.key() for x, y in zip(a, b, strict=True))
    assert {t.payload["width"] for t in b} == {"none"}
    train = [t.config.key() for t in main_tasks(plain, sources) if t.tags["kind"] == "train"]
    assert train == [t.config.key() for t in main_tasks(wide, sources)
                     if t.tags["kind"] == "train"]  # training runs are shared
    with pytest.raises(InputError, match="width setting"):
        load_spec(write_study(tmp_path, SPEC.replace("splits = 1", 'splits = 1\nwidth = "umap"')))
