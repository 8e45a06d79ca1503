"""Hostile cases: command-line misuse of every command, run stores, studies and reports."""

import json

import numpy as np

from tests.fast import FAST_FINETUNE, FAST_TRAIN
from tests.hostile.harness import case

NET = """
import torch
from torch import nn

def fcn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                         nn.Flatten())
"""


def series(d, n=30, per_class=None):
    """A small 3-class series target ``s.npz`` and a tiny FCN ``net.py`` in ``d``."""
    (d / "net.py").write_text(NET)
    rng = np.random.default_rng(0)
    n = 3 * per_class if per_class else n
    np.savez(d / "s.npz", X=rng.standard_normal((n, 1, 16)).astype(np.float32),
             y=np.arange(n) % 3)
    return str(d / "s.npz"), f"torch:{d / 'net.py'}:fcn"


def finetune(d, *extra, db=("--no-db",)):
    data, model = series(d)
    strategy = [] if "--strategy" in extra or "--freeze" in extra else ["--strategy", "full"]
    return ["finetune", *FAST_FINETUNE, "--data", data, "--model", model, "--epochs", "1",
            "--seeds", "1", *strategy, *db, *extra]


def rank(d, *extra):
    data, model = series(d)
    return ["rank", "--data", data, "--model", model, "--metric", "logme", "--subsamples", "0",
            "--cache-dir", str(d / "c"), *extra]


def layers(d, *extra):
    data, model = series(d)
    return ["layers", *FAST_TRAIN, "--data", data, "--model", model, "--metric", "logme", "--out",
            str(d / "out"), "--cache-dir", str(d / "c"), *extra]


def study(d, change=None, *argv):
    from tests.study.conftest import SPEC, write_study

    path = write_study(d, SPEC if change is None else SPEC.replace(*change))
    return [*(argv or ("study", "run")), str(path)]


def json_rows(out, _d):
    return bool(json.loads(out))


# -- the command line itself ------------------------------------------------------------------
case("cli: no command", lambda d: [], needle="required")
case("cli: unknown command", lambda d: ["rnak"], needle="invalid choice: 'rnak'")
case("cli: unknown flag", lambda d: rank(d, "--nosuch", "1"), needle="unrecognized arguments")
case("cli: --format xml", lambda d: ["metrics", "--format", "xml"], needle="invalid choice")

# -- rank --------------------------------------------------------------------------------------
case("rank: no --data", lambda d: ["rank", "--model", "raw"], needle="--data")
case("rank: no --model", lambda d: ["rank", "--data", series(d)[0]], needle="--model")
case("rank: --width pca:0", lambda d: rank(d, "--width", "pca:0"),
     needle="Expected pca:K with an integer K >= 1")
case("rank: unknown --width", lambda d: rank(d, "--width", "tsne"),
     needle="Expected a width setting among none, pca[:K], standardize")
case("advise: no --data", lambda d: ["advise", "--model", "raw"],
     needle="Expected --data and at least one --model")
case("advise: no --model", lambda d: ["advise", "--data", series(d)[0]],
     needle="Expected --data and at least one --model")
def _broken_advisor(d):
    (d / "a.json").write_text("{")
    data, model = series(d)
    return ["advise", "--data", data, "--model", model, "--advisor", str(d / "a.json")]


case("advise: an advisor file that is not JSON", _broken_advisor,
     needle="Expected an advisor JSON file")
case("advise: unknown --width", lambda d: ["advise", "--data", series(d)[0], "--model",
                                         series(d)[1], "--width", "umap"],
     needle="Expected a width setting among none, pca[:K], standardize")
case("advise: --fit a spec that does not exist", lambda d: ["advise", "--fit",
                                                             str(d / "nope.toml")],
     needle="does not exist")
case("rank: misspelt metric", lambda d: rank(d, "--metric", "logmee"),
     needle="did you mean 'logme'")
case("rank: leep for a model without a classifier head",
     lambda d: rank(d, "--metric", "leep"), needle="classifier head")
case("rank: empty metric list", lambda d: rank(d, "--metric", ","), needle="at least one metric")
case("rank: negative subsamples", lambda d: rank(d, "--subsamples", "-1"),
     needle="subsamples >= 0")
case("rank: subsamples not a number", lambda d: rank(d, "--subsamples", "many"),
     needle="invalid int value")
case("rank: unknown layer", lambda d: rank(d, "--layer", "nope"), needle="has no layer 'nope'")
case("rank: misspelt backend", lambda d: rank(d, "--model", "effnt-lite:0"),
     needle="did you mean 'effnet-lite'")
case("rank: raw with an argument", lambda d: rank(d, "--model", "raw:x"), needle="plain 'raw'")
case("rank: random twin of raw", lambda d: rank(d, "--model", "random:raw"),
     needle="with weights")
case("rank: name without backend", lambda d: rank(d, "--model", "effnet"),
     needle="<backend>:<model>")
case("rank: per-class 0", lambda d: rank(d, "--per-class", "0"), needle="per_class >= 1")
case("rank: fraction 0", lambda d: rank(d, "--fraction", "0"), needle="0 < fraction <= 1")
case("rank: fraction 1.5", lambda d: rank(d, "--fraction", "1.5"), needle="0 < fraction <= 1")
case("rank: per-class and fraction", lambda d: rank(d, "--per-class", "3", "--fraction", "0.5"),
     needle="one of per_class and fraction")
case("rank: image model on series", lambda d: rank(d, "--model", "effnet-lite:0@32"),
     needle="takes image inputs, got a series dataset")
case("rank: no subsamples prints no nan intervals", lambda d: rank(d), expect="correct",
     check=lambda out, d: "nan" not in out and "no intervals" in out)
case("rank: json output is strict JSON", lambda d: rank(d, "--format", "json"),
     expect="correct", check=lambda out, d: all(
         r["logme_lo"] is None for r in json.loads(out, parse_constant=lambda c: 1 / 0)))
case("rank: without baselines", lambda d: rank(d, "--no-baselines", "--format", "json"),
     expect="correct", check=lambda out, d: [r["role"] for r in json.loads(out)] == ["candidate"])
case("rank: --input-size 0", lambda d: rank(d, "--input-size", "0"),
     needle="--input-size >= 1")
case("rank: --mean with two channels", lambda d: rank(d, "--mean", "0.5,0.5"),
     needle="1 or 3 comma-separated numbers for --mean")
case("rank: --std not a number", lambda d: rank(d, "--std", "wide"),
     needle="comma-separated numbers for --std")
case("rank: --std zero", lambda d: rank(d, "--std", "0"), needle="positive numbers for --std")
case("rank: --input-size for the raw baseline",
     lambda d: ["rank", "--data", series(d)[0], "--model", "raw", "--input-size", "32"],
     needle="has none; drop --input-size")
case("rank: per-class above a class size is stated", lambda d: rank(d, "--per-class", "50"),
     expect="correct", check=lambda out, d: "logme" in out)

# -- finetune ----------------------------------------------------------------------------------
case("finetune: --opt value not a number", lambda d: finetune(d, "--strategy", "lp_ft", "--opt",
                                                               "probe_epochs=abc"),
     needle="expected probe_epochs to be an integer, got 'abc'")
case("finetune: --opt lr not a number", lambda d: finetune(d, "--opt", "lr=fast"),
     needle="expected lr to be a number")
case("finetune: --opt bool field", lambda d: finetune(d, "--strategy", "lora", "--opt",
                                                       "merge=3"),
     needle="expected merge to be true or false")
case("finetune: --opt without =", lambda d: finetune(d, "--opt", "nonsense"),
     needle="KEY=VALUE")
case("finetune: --opt unknown", lambda d: finetune(d, "--opt", "lrr=1"),
     needle="did you mean 'lr'")
case("finetune: negative lr", lambda d: finetune(d, "--opt", "lr=-1"), needle="lr > 0")
case("finetune: misspelt strategy", lambda d: finetune(d, "--strategy", "fulll"),
     needle="did you mean 'full'")
case("finetune: unknown baseline", lambda d: finetune(d, "--baseline", "nothing"),
     needle="Unknown strategy 'nothing'")
case("finetune: --freeze with another strategy", lambda d: finetune(d, "--strategy", "full",
                                                                     "--freeze", "1"),
     needle="(--freeze) with the freeze strategy")
case("finetune: negative freeze", lambda d: finetune(d, "--freeze", "-1"), needle="k >= 0")
case("finetune: --cut and --layer differ", lambda d: finetune(d, "--cut", "3", "--layer", "1"),
     needle="one layer")
case("finetune: unknown cut layer", lambda d: finetune(d, "--cut", "nope"),
     needle="has no layer 'nope'")
case("finetune: negative head width", lambda d: finetune(d, "--head-width", "-1"),
     needle="head_width >= 0")
case("finetune: zero epochs", lambda d: finetune(d, "--epochs", "0"), needle="epochs")
case("finetune: zero patience", lambda d: finetune(d, "--patience", "0"), needle="patience")
case("finetune: zero batch size", lambda d: finetune(d, "--batch-size", "0"),
     needle="batch_size")
case("finetune: zero seeds", lambda d: finetune(d, "--seeds", "0"), needle="seeds >= 1")
case("finetune: negative seeds", lambda d: finetune(d, "--seeds", "-1"), needle="seeds >= 1")
case("finetune: seeds not a number", lambda d: finetune(d, "--seeds", "x"),
     needle="invalid int value")
case("finetune: fractions not numbers", lambda d: finetune(d, "--fractions", "a,b"),
     needle="comma-separated numbers for --fractions")
case("finetune: fraction 0 in a curve", lambda d: finetune(d, "--fractions", "0,1"),
     needle="0 < fraction <= 1")
case("finetune: fraction 2 in a curve", lambda d: finetune(d, "--fractions", "0.5,2"),
     needle="0 < fraction <= 1")
case("finetune: target accuracy not a number", lambda d: finetune(d, "--target-acc", "hi"),
     needle="invalid float value")
case("finetune: a model that cannot train", lambda d: finetune(d, "--model", "raw"),
     needle="whose weights can train")
case("finetune: probe epochs above epochs", lambda d: finetune(d, "--strategy", "lp_ft", "--opt",
                                                                "probe_epochs=5"),
     needle="0 < probe_epochs < epochs")
case("finetune: LoRA rank 0", lambda d: finetune(d, "--strategy", "lora", "--opt", "r=0"),
     needle="r >= 1")
case("finetune: --save onto a file", lambda d: finetune(d, "--save", str(_file(d))),
     needle="folder to save the model in")
case("finetune: --db and --no-db", lambda d: finetune(d, "--db", "sqlite:///x.db"),
     needle="--db or --no-db")
case("finetune: --db not a URL", lambda d: finetune(d, db=("--db", "runs.db")),
     needle="e.g. --db sqlite:///runs.db")
case("finetune: too few samples per class for a split",
     lambda d: ["finetune", *FAST_FINETUNE, "--data", series(d, per_class=2)[0], "--model",
                f"torch:{d / 'net.py'}:fcn", "--epochs", "1", "--seeds", "1", "--no-db",
                "--strategy", "full"],
     needle="samples per class")


case("finetune: --splits 0", lambda d: finetune(d, "--splits", "0"),
     needle="Expected splits a whole number >= 1")
case("finetune: --splits with --test-data",
     lambda d: finetune(d, "--splits", "3", "--test-data", series(d)[0]),
     needle="Expected --splits 1 with a test set")
case("finetune: more folds than samples per class", lambda d: finetune(d, "--splits", "20"),
     needle="at least 20 samples per class for 20-fold")
case("finetune: --lr-grid 0", lambda d: finetune(d, "--lr-grid", "0"),
     needle="Expected lr_grid distinct multipliers > 0")
case("finetune: --lr-grid infinite", lambda d: finetune(d, "--lr-grid", "1,inf"),
     needle="Expected lr_grid distinct multipliers > 0")
case("finetune: --lr-grid nan", lambda d: finetune(d, "--lr-grid", "nan"),
     needle="Expected lr_grid distinct multipliers > 0")
case("finetune: --lr-grid repeated", lambda d: finetune(d, "--lr-grid", "1,1"),
     needle="Expected lr_grid distinct multipliers > 0")
case("finetune: --lr-grid not numbers", lambda d: finetune(d, "--lr-grid", "low,high"),
     needle="comma-separated numbers for --lr-grid")
case("finetune: negative --min-steps", lambda d: finetune(d, "--min-steps", "-1"),
     needle="Expected min_steps a whole number >= 0")
case("finetune: --test-data with classes --data lacks",
     lambda d: finetune(d, "--test-data", _other_classes(d)),
     needle="Expected the test labels among the 3 classes of --data")
case("finetune: --val-data of another series length",
     lambda d: finetune(d, "--val-data", _other_length(d)),
     needle="Expected the validation samples shaped like --data's (1, 16), got (2, 9)")
case("finetune: --test-data missing", lambda d: finetune(d, "--test-data", str(d / "no.npz")),
     needle="no.npz")


def _other_classes(d):
    rng = np.random.default_rng(1)
    np.savez(d / "t.npz", X=rng.standard_normal((12, 1, 16)).astype(np.float32),
             y=np.arange(12) % 4)
    return str(d / "t.npz")


def _other_length(d):
    rng = np.random.default_rng(1)
    np.savez(d / "v.npz", X=rng.standard_normal((12, 2, 9)).astype(np.float32),
             y=np.arange(12) % 3)
    return str(d / "v.npz")


def _file(d):
    (d / "afile").write_text("not a folder")
    return d / "afile"


# -- layers ------------------------------------------------------------------------------------
case("layers: only source-head metrics", lambda d: layers(d, "--metric", "nce"),
     needle="only source-head metrics")
case("layers: --verify with zero seeds", lambda d: layers(d, "--verify", "--seeds", "0"),
     needle="seeds >= 1")
case("layers: --out onto a file", lambda d: layers(d, "--out", str(_file(d))),
     needle="folder for the layer outputs")
case("layers: --lr not a number", lambda d: layers(d, "--verify", "--lr", "x"),
     needle="invalid float value")
case("layers: a model without layers to profile", lambda d: layers(d, "--model", "raw"),
     needle="model with weights for a layer profile")

# -- studies and reports -----------------------------------------------------------------------
case("study: missing spec file", lambda d: ["study", "run", str(d / "nope.toml")],
     needle="does not exist")
case("study: invalid TOML", lambda d: study(d, ("[train]", "[train")), needle="valid TOML")
case("study: unknown key", lambda d: study(d, ("seeds = 2", "seeds = 2\nseedz = 3")),
     needle="did you mean 'seeds'")
case("study: seeds as a string", lambda d: study(d, ("seeds = 2", 'seeds = "3"')),
     needle="expected seeds to be an integer")
case("study: seeds true", lambda d: study(d, ("seeds = 2", "seeds = true")),
     needle="expected seeds to be an integer")
case("study: fractional epochs", lambda d: study(d, ("epochs = 2\n", "epochs = 2.5\n")),
     needle="expected epochs to be an integer")
case("study: fractions not numbers", lambda d: study(d, ("fractions = [0.5, 1.0]",
                                                         'fractions = ["a"]')),
     needle="numbers in (0, 1] for fractions")
case("study: unknown executor", lambda d: [*study(d), "--executor", "sparkk"],
     needle="Unknown executor 'sparkk'")
case("study: zero jobs", lambda d: [*study(d), "--jobs", "0"], needle="--jobs >= 1")
case("study: unknown action", lambda d: study(d, None, "study", "walk"),
     needle="invalid choice: 'walk'")
case("study: evaluate before any run", lambda d: study(d, None, "study", "evaluate"),
     expect="correct", check=lambda out, d: "no finished pairs" in out)
case("report: no finished runs", lambda d: [*study(d, None, "report"), "-o",
                                            str(d / "r.html")],
     needle="no finished (target, source) pair")
case("report: output onto a folder", lambda d: [*study(d, None, "report"), "-o", str(d)],
     needle="file to write the report to")

# -- the run store -----------------------------------------------------------------------------
case("runs: unknown state", lambda d: ["runs", "--state", "done"], needle="invalid choice")
case("runs: --db not a URL", lambda d: ["runs", "--db", "runs.db"], needle="sqlite:///runs.db")
case("runs: --db in a missing folder", lambda d: ["runs", "--db", f"sqlite:///{d}/no/r.db"],
     needle="existing folder")
case("runs: --db not a database", lambda d: ["runs", "--db", f"sqlite:///{_garbage(d)}"],
     needle="cannot open")
case("runs: --db truncated database", lambda d: ["runs", "--db", f"sqlite:///{_truncated(d)}"],
     needle="cannot open")
case("runs: unknown dialect", lambda d: ["runs", "--db", "nosuchdialect://x"],
     needle="SQLAlchemy URL")
case("runs: empty store", lambda d: ["runs", "--db", f"sqlite:///{d / 'new.db'}"],
     expect="correct", check=lambda out, d: "no runs" in out)
case("runs export: no --mlflow", lambda d: ["runs", "export", "--db", f"sqlite:///{d / 'r.db'}"],
     needle="Expected --mlflow URI")
case("runs export: empty store", lambda d: ["runs", "export", "--db", f"sqlite:///{d / 'r.db'}",
                                            "--mlflow", (d / "mlruns").as_uri()],
     needle="Expected runs to export")
case("runs export: unknown MLflow scheme", lambda d: ["runs", "export", "--db", _one_run(d),
                                                      "--mlflow", "nosuch://x"],
     needle="MLflow")  # "transferscope[mlflow]" where mlflow is not installed
case("db: upgrade of a garbage file", lambda d: ["db", "upgrade", "--db",
                                                 f"sqlite:///{_garbage(d)}"],
     needle="cannot open")
case("db: upgrade in a missing folder", lambda d: ["db", "upgrade", "--db",
                                                   f"sqlite:///{d}/no/r.db"],
     needle="existing folder")
case("db: unknown action", lambda d: ["db", "downgrade"], needle="invalid choice")
case("db: upgrade of a new store creates it", lambda d: ["db", "upgrade", "--db",
                                                         f"sqlite:///{d / 'n.db'}"],
     expect="correct", check=lambda out, d: "created" in out and (d / "n.db").exists())


def _one_run(d):
    from transferscope.config import RunConfig
    from transferscope.store import SQLRunStore

    store = SQLRunStore(f"sqlite:///{d / 'one.db'}")
    cfg = RunConfig(kind="train", data="d" * 16, model="m", strategy="full", layer="4")
    store.finish(store.start(cfg), {"test_acc": 0.5})
    return store.url


def _garbage(d):
    rng = np.random.default_rng(1)
    (d / "garbage.db").write_bytes(rng.integers(0, 255, 4096, dtype=np.uint8).tobytes())
    return d / "garbage.db"


def _truncated(d):
    from transferscope.store import SQLRunStore

    SQLRunStore(f"sqlite:///{d / 'full.db'}")
    raw = (d / "full.db").read_bytes()
    (d / "cut.db").write_bytes(raw[: len(raw) // 3])
    return d / "cut.db"


# -- metrics, score and the example ------------------------------------------------------------
def _feats(d):
    rng = np.random.default_rng(0)
    np.savez(d / "f.npz", features=rng.standard_normal((60, 5)), labels=np.arange(60) % 3)
    return str(d / "f.npz")


case("score: option no metric takes", lambda d: ["score", _feats(d), "--metric", "logme",
                                                 "--opt", "seed=1"], needle="not accepted")
case("score: unknown metric", lambda d: ["score", _feats(d), "--metric", "nope"],
     needle="Unknown metric 'nope'")
case("score: missing labels file", lambda d: ["score", _feats(d), "--labels",
                                              str(d / "none.npy")], needle="does not exist")
case("score: features scaled by 1e200", lambda d: ["score", _huge(d), "--metric", "knn"],
     needle="sane scale")
case("score: 1e200 features with logme", lambda d: ["score", _huge(d), "--metric", "logme"],
     needle="sane scale")
case("example: unknown metric", lambda d: ["example", "--metric", "nope"],
     needle="Unknown metric 'nope'")
case("metrics: json is strict JSON", lambda d: ["metrics", "--format", "json"],
     expect="correct", check=json_rows)


def _huge(d):
    rng = np.random.default_rng(0)
    np.savez(d / "h.npz", features=rng.standard_normal((60, 5)) * 1e200,
             labels=np.arange(60) % 3)
    return str(d / "h.npz")


def _no_driver(d):
    import importlib.util

    if importlib.util.find_spec("psycopg2") is not None:  # then the URL is fine: use a bad one
        return ["runs", "--db", "postgresql+nosuchdriver://user@localhost/db"]
    return ["runs", "--db", "postgresql://user@localhost/db"]


case("runs: postgresql without its driver", _no_driver, needle="install")
case("finetune: negative --log-every", lambda d: finetune(d, "--log-every", "-1"),
     needle="Expected --log-every")
case("study run: --log-every not a number",
     lambda d: study(d, None, "study", "run", "--log-every", "often"), expect="error",
     needle="--log-every")
