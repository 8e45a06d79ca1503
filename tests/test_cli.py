import csv
import io
import json

import numpy as np
import pytest

from tests.conftest import blobs, probs_for
from transferscope.cli import main
from transferscope.metrics import score

X, Y = blobs(120, 6, 3, 2.0, 0)
P = probs_for(Y)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_metrics_lists_everything(capsys):
    code, out, _ = run(capsys, "metrics")
    assert code == 0
    for name in ("logme", "leep", "nce", "hscore_reg", "nleep", "sfda", "gbc", "transrate",
                 "parc", "knn", "linear_probe"):
        assert name in out
    code, out, _ = run(capsys, "metrics", "--format", "json")
    rows = json.loads(out)
    assert {r["metric"] for r in rows} >= {"logme", "leep"}
    assert all(r["needs"] and r["description"] for r in rows)


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_score_npz_round_trip(tmp_path, capsys, fmt):
    path = tmp_path / "f.npz"
    np.savez(path, features=X, labels=Y, probs=P)
    code, out, _ = run(capsys, "score", str(path), "--metric", "logme,leep,hscore",
                       "--format", fmt)
    assert code == 0
    expected = {"logme": score("logme", X, Y), "hscore": score("hscore", X, Y),
                "leep": score("leep", None, Y, source_probs=P)}
    if fmt == "json":
        got = {r["metric"]: r["value"] for r in json.loads(out)}
        assert got == pytest.approx(expected, rel=1e-12)
    elif fmt == "csv":
        got = {r["metric"]: float(r["value"]) for r in csv.DictReader(io.StringIO(out))}
        assert got == pytest.approx(expected, rel=1e-12)
    else:
        assert "logme" in out and f"{expected['logme']:.6g}" in out


def test_score_npy_with_labels_file_and_options(tmp_path, capsys):
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    code, out, _ = run(capsys, "score", str(tmp_path / "x.npy"), "--labels",
                       str(tmp_path / "y.npy"), "--metric", "knn", "--opt", "n_neighbors=3",
                       "--format", "json")
    assert code == 0
    assert json.loads(out)[0]["value"] == pytest.approx(score("knn", X, Y, n_neighbors=3))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_score_tables(tmp_path, capsys, suffix):
    import pandas as pd

    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    df["target"] = np.array(["a", "b", "c"])[Y]
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        df.to_parquet(path)
    else:
        df.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    code, out, _ = run(capsys, "score", str(path), "--labels-key", "target", "--metric",
                       "logme", "--format", "json")
    assert code == 0
    assert json.loads(out)[0]["value"] == pytest.approx(score("logme", X, Y), rel=1e-9)


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    path = tmp_path / "f.npz"
    np.savez(path, features=X, labels=Y)
    cases = [
        (["score", str(path), "--metric", "logmee"], "did you mean 'logme'"),
        (["score", str(path), "--metric", "leep"], "source"),
        (["score", str(tmp_path / "missing.npz")], "does not exist"),
        (["score", str(path), "--features-key", "emb"], "got keys"),
        (["score", str(path), "--metric", "logme", "--opt", "seed=1"], "not accepted"),
        (["score", str(path), "--opt", "nonsense"], "KEY=VALUE"),
    ]
    for argv, needle in cases:
        code, out, err = run(capsys, *argv)
        assert code == 2, argv
        assert needle in err and err.count("\n") == 1, err


def test_missing_labels(tmp_path, capsys):
    np.save(tmp_path / "x.npy", X)
    code, _, err = run(capsys, "score", str(tmp_path / "x.npy"))
    assert code == 2 and "--labels" in err


def test_demo_orders_feature_sets(capsys):
    code, out, _ = run(capsys, "example", "--metric", "logme,hscore_reg,leep,knn", "--format",
                       "json")
    assert code == 0
    for row in json.loads(out[out.index("["):]):
        assert row["pixels"] > row["pixels+noise"] > row["noise"], row


def test_console_script_entry_point():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "transferscope.cli", "--version"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0 and "transferscope" in res.stdout


def _subparsers():
    import argparse

    from transferscope.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_subcommand_has_a_description_an_example_and_help_on_every_flag():
    for name, sub in _subparsers().items():
        assert sub.description and len(sub.description) > 20, name
        assert sub.epilog and f"tscope {name}" in sub.epilog, name
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"tscope {name} {action.option_strings or action.dest}"


def test_cli_defaults_come_from_the_api_configs():
    from transferscope.config import TrainConfig
    from transferscope.rank import RankConfig

    subs = _subparsers()
    ft = subs["finetune"].parse_args(["--data", "d", "--model", "m"])
    assert (ft.epochs, ft.patience, ft.batch_size) == (TrainConfig().epochs,
                                                       TrainConfig().patience,
                                                       TrainConfig().batch_size)
    rk = subs["rank"].parse_args(["--data", "d", "--model", "m"])
    assert rk.subsamples == RankConfig().subsamples
    assert rk.metric == ",".join(RankConfig().metrics)
    assert subs["rank"].parse_args(["--data", "d", "--model", "m", "--bootstrap",
                                    "3"]).subsamples == 3  # the old spelling still works


def test_figures_do_not_touch_pyplot(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("matplotlib")
    code = f"""
import sys
from transferscope.layers.plot import plot_profile
from transferscope.layers.profile import LayerProfile
rows = [dict(layer=str(i), score=i / 2, logme=float(i), random_logme=0.0, cka_random=0.5)
        for i in range(3)]
prof = LayerProfile("m", "d", 10, 2, ("logme",), "logme", rows)
plot_profile(prof, {str(tmp_path)!r})
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "layer_profile.png").stat().st_size > 1000
