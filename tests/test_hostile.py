"""Hostile but realistic input through the CLI: one line on stderr saying what was expected,
what came and how to fix it; exit 2; never a traceback (the start of the suite of issue 12)."""

import numpy as np
import pytest

from transferscope.cli import main

NET = """
import torch
from torch import nn

def fcn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                         nn.Flatten())
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    (d / "net.py").write_text(NET)
    rng = np.random.default_rng(0)
    np.savez(d / "s.npz", X=rng.standard_normal((30, 1, 16)).astype(np.float32),
             y=np.arange(30) % 3)
    (d / "garbage.db").write_bytes(rng.integers(0, 255, 4096, dtype=np.uint8).tobytes())
    (d / "afile").write_text("not a folder")
    return d


def _finetune(d, *extra):
    return ["finetune", "--data", str(d / "s.npz"), "--model", f"torch:{d / 'net.py'}:fcn",
            "--epochs", "1", "--seeds", "1", "--no-db", *extra]


CASES = {
    "opt not a number": (lambda d: _finetune(d, "--opt", "probe_epochs=abc"),
                         "expected probe_epochs to be an integer, got 'abc'"),
    "opt of a bool field": (lambda d: _finetune(d, "--strategy", "lora", "--opt", "merge=3"),
                            "expected merge to be true or false"),
    "fractions not numbers": (lambda d: _finetune(d, "--fractions", "a,b"),
                              "comma-separated numbers for --fractions"),
    "zero seeds": (lambda d: _finetune(d, "--seeds", "0"), "seeds >= 1"),
    "negative seeds": (lambda d: _finetune(d, "--seeds", "-1"), "seeds >= 1"),
    "zero batch size": (lambda d: _finetune(d, "--batch-size", "0"), "batch_size"),
    "save onto a file": (lambda d: _finetune(d, "--save", str(d / "afile")),
                         "folder to save the model in"),
    "db and no-db": (lambda d: _finetune(d, "--db", "sqlite:///x.db"), "--db or --no-db"),
    "per-class and fraction": (lambda d: _finetune(d, "--per-class", "3", "--fraction", "0.5"),
                               "one of per_class and fraction"),
    "layers verify zero seeds": (lambda d: ["layers", "--data", str(d / "s.npz"), "--model",
                                            f"torch:{d / 'net.py'}:fcn", "--verify", "--seeds",
                                            "0", "--out", str(d / "out")], "seeds >= 1"),
    "db not a URL": (lambda d: ["runs", "--db", "runs.db"], "sqlite:///runs.db"),
    "db in a missing folder": (lambda d: ["runs", "--db", f"sqlite:///{d}/no/such/r.db"],
                               "existing folder"),
    "db not a database": (lambda d: ["runs", "--db", f"sqlite:///{d / 'garbage.db'}"],
                          "cannot open"),
    "upgrade of a garbage db": (lambda d: ["db", "upgrade", "--db",
                                           f"sqlite:///{d / 'garbage.db'}"], "cannot open"),
    "bad URL": (lambda d: ["runs", "--db", "nosuchdialect://x"], "SQLAlchemy URL"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_exit_2(files, capsys, name):
    argv, needle = CASES[name]
    code = main(argv(files))
    out, err = capsys.readouterr()
    assert code == 2, (name, err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert needle in err, err


def test_a_missing_database_driver_names_what_to_install(capsys):
    pytest.importorskip("sqlalchemy")
    try:
        import psycopg2  # noqa: F401
        pytest.skip("psycopg2 is installed here")
    except ImportError:
        pass
    code = main(["runs", "--db", "postgresql://user@localhost/db"])
    err = capsys.readouterr().err
    assert code == 2 and "psycopg2" in err and "install" in err and err.count("\n") == 1


def test_per_class_above_a_class_size_is_stated_in_one_warning_line(files, capsys):
    code = main(["rank", "--data", str(files / "s.npz"), "--model", "raw", "--metric", "logme",
                 "--per-class", "50", "--subsamples", "0", "--cache-dir", str(files / "c")])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("\n") == 1 and "tscope: warning: per_class 50: 3 class(es)" in err, err
