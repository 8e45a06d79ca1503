"""Hostile cases: models. User modules (``torch:<file.py>:<factory>[@<checkpoint>]``) whose code
does not run, checkpoints that are missing, corrupt or unsafe, models whose input or output does
not fit the data, feature-cache entries that are corrupt or stale, and names of models that do
not exist or cannot load here; through ``tscope rank``, ``tscope layers`` and ``tscope
finetune``."""

import contextlib
import io
import json
import pickle

import numpy as np
import torch

from tests.fast import FAST_FINETUNE, FAST_TRAIN
from tests.hostile.harness import case

HEADER = "import torch\nfrom torch import nn\n\n"

FCN = HEADER + """
def fcn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                         nn.Flatten())
"""


# -- files ---------------------------------------------------------------------------------
def series(d, n=30, channels=1, length=16):
    """A (n, channels, length) float32 3-class series target ``s.npz``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, channels, length)).astype(np.float32)
    y = np.arange(n) % 3
    x += y[:, None, None].astype(np.float32)  # some signal: the scores are not all equal
    np.savez(d / "s.npz", X=x, y=y)
    return str(d / "s.npz")


def arrays(d, n=30, width=5):
    """An (n, width) float32 3-class array target ``a.npz``."""
    rng = np.random.default_rng(0)
    np.savez(d / "a.npz", X=rng.standard_normal((n, width)).astype(np.float32),
             y=np.arange(n) % 3)
    return str(d / "a.npz")


def images(d, n=30, channels=3):
    """(n, 8, 8, channels) uint8 3-class images ``i.npz``."""
    rng = np.random.default_rng(0)
    np.savez(d / "i.npz", X=rng.integers(0, 255, (n, 8, 8, channels), dtype=np.uint8),
             y=np.arange(n) % 3)
    return str(d / "i.npz")


def net(d, body, factory="build", file="net.py"):
    """``body`` (after the torch imports) as ``file``; the ``torch:`` name of ``factory``."""
    (d / file).write_text(HEADER + body)
    return f"torch:{d / file}:{factory}"


def seq(*layers):
    """A factory ``build`` returning ``nn.Sequential(<layers>)`` (seeded)."""
    return ("def build():\n    torch.manual_seed(0)\n"
            f"    return nn.Sequential({', '.join(layers)})\n")


def module(forward, init="self.conv = nn.Conv1d(1, 4, 3, padding=1)"):
    """A factory ``build`` returning a module with ``init`` and ``forward`` (one expression)."""
    return f"""
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        {init}

    def forward(self, x):
        return {forward}


def build():
    torch.manual_seed(0)
    return Net()
"""


def fcn(d):
    """The tiny FCN that fits ``series``."""
    (d / "net.py").write_text(FCN)
    return f"torch:{d / 'net.py'}:fcn"


def fcn_state(d):
    """The FCN's own weights."""
    import importlib.util

    (d / "net.py").write_text(FCN)
    spec = importlib.util.spec_from_file_location("fcn_for_weights", d / "net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.fcn().state_dict()


# -- commands --------------------------------------------------------------------------------
def rank(d, model, *extra, data=None):
    return ["rank", "--data", data or series(d), "--model", model, "--subsamples", "0",
            "--metric", "logme", "--format", "json", "--cache-dir", str(d / "c"), *extra]


def layers(d, model, *extra, data=None):
    return ["layers", *FAST_TRAIN, "--data", data or series(d), "--model", model, "--metric",
            "logme", "--cache-dir", str(d / "c"), "--out", str(d / "out"), *extra]


def finetune(d, model, *extra, data=None):
    return ["finetune", *FAST_FINETUNE, "--data", data or series(d), "--model", model,
            "--strategy", "full", "--epochs", "1", "--seeds", "1", "--no-db", *extra]


def scores(text):
    """``{model: logme}`` of ``rank --format json`` output."""
    return {r["model"]: r["logme"] for r in json.loads(text)}


def ranked(model_part):
    """Check: the ``rank --format json`` output has a finite score for a model whose name
    contains ``model_part``."""
    return lambda out, d: any(model_part in m and np.isfinite(v)
                              for m, v in scores(out).items())


def quiet_main(argv):
    """Run the CLI with its output captured; the stdout."""
    from transferscope.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    return out.getvalue()


# -- torch: files whose code does not run ------------------------------------------------------
case("model: torch file with a syntax error",
     lambda d: rank(d, net(d, "def build(:\n    return nn.Linear(2, 2)\n")),
     needle="Expected valid Python in net.py, got SyntaxError at line 4")
case("model: torch file that raises on import",
     lambda d: rank(d, net(d, "raise RuntimeError('no GPU here')\n" + seq("nn.Flatten()"))),
     needle="Expected net.py to import, got RuntimeError: no GPU here (line 4 of net.py)")
case("model: torch file importing a missing package",
     lambda d: rank(d, net(d, "import not_a_package_xyz\n" + seq("nn.Flatten()"))),
     needle="No module named 'not_a_package_xyz'")
case("model: torch file that calls sys.exit on import",
     lambda d: rank(d, net(d, "import sys\nsys.exit(3)\n")),
     needle="got sys.exit()")
case("model: torch file that is not UTF-8",
     lambda d: (d.joinpath("net.py").write_bytes(b"# \xff\xfe caf\xe9\n" + FCN.encode()),
                rank(d, f"torch:{d / 'net.py'}:fcn"))[1],
     needle="UTF-8")
case("model: torch file that is not a .py file",
     lambda d: (d.joinpath("net.txt").write_text(FCN), rank(d, f"torch:{d / 'net.txt'}:fcn"))[1],
     needle="Expected a Python file (.py)")
case("model: torch file that does not exist",
     lambda d: rank(d, f"torch:{d / 'nope.py'}:build"),
     needle="Expected torch:<file.py>:<factory>")
case("model: torch file that is a folder",
     lambda d: (d.joinpath("pkg.py").mkdir(), rank(d, f"torch:{d / 'pkg.py'}:build"))[1],
     needle="is a folder")
case("model: torch name without a factory",
     lambda d: rank(d, f"torch:{fcn(d).split(':')[1]}"),
     needle="no factory named")
case("model: torch factory missing (did-you-mean)",
     lambda d: rank(d, fcn(d).replace(":fcn", ":fnc")),
     needle="Expected a function 'fnc' in net.py, got none; did you mean 'fcn'")
case("model: torch factory that is not a function",
     lambda d: rank(d, net(d, "build = 3\n")),
     needle="Expected build in net.py to be a function returning an nn.Module, got a int")
case("model: torch factory that raises",
     lambda d: rank(d, net(d, "def build():\n    raise ValueError('depth must be > 0')\n")),
     needle="Expected build() in net.py to build an nn.Module, got ValueError: depth must be > 0")
case("model: torch factory that needs arguments",
     lambda d: rank(d, net(d, "def build(depth):\n    return nn.Linear(depth, 2)\n")),
     needle="Expected build() in net.py to build an nn.Module, got TypeError")
case("model: torch module that forgot super().__init__()",
     lambda d: rank(d, net(d, """
class Net(nn.Module):
    def __init__(self):
        self.fc = nn.Linear(16, 3)


def build():
    return Net()
""")), needle="Expected build() in net.py to build an nn.Module, got AttributeError")
case("model: torch factory returning None",
     lambda d: rank(d, net(d, "def build():\n    nn.Linear(16, 3)\n")),
     needle="Expected build() in net.py to build an nn.Module, got None")
case("model: torch factory returning a tensor",
     lambda d: rank(d, net(d, "def build():\n    return torch.zeros(3)\n")),
     needle="got a Tensor")
case("model: torch factory returning a list of layers",
     lambda d: rank(d, net(d, "def build():\n    return [nn.Conv1d(1, 4, 3), nn.ReLU()]\n")),
     needle="got a list")
case("model: torch file using a dataclass (module registered while it runs)",
     lambda d: rank(d, net(d, """
from dataclasses import dataclass


@dataclass
class Cfg:
    width: int = 4


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, Cfg().width, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                         nn.Flatten())
""")), expect="correct", check=ranked("net.py:build"))
case("model: torch file importing a sibling module",
     lambda d: (d.joinpath("blocks_xyz.py").write_text(HEADER + "WIDTH = 4\n"),
                rank(d, net(d, "from blocks_xyz import WIDTH\n" + seq(
                    "nn.Conv1d(1, WIDTH, 3)", "nn.AdaptiveAvgPool1d(1)", "nn.Flatten()"))))[1],
     expect="correct", check=ranked("net.py:build"))


# -- checkpoints -------------------------------------------------------------------------------
def with_ckpt(write):
    """rank of the FCN with a checkpoint that ``write(path, d)`` makes."""
    def argv(d):
        path = write(d)
        return rank(d, f"{fcn(d)}@{path}")
    return argv


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


case("model: checkpoint missing",
     with_ckpt(lambda d: d / "missing.safetensors"),
     needle="Expected a checkpoint file after '@'")
case("model: checkpoint that is a folder",
     with_ckpt(lambda d: (d / "ckpt").mkdir() or d / "ckpt"), needle="(a folder)")
case("model: checkpoint of random bytes (.pt)",
     with_ckpt(lambda d: (d / "w.pt").write_bytes(np.random.default_rng(0).bytes(300))
               and d / "w.pt"),
     needle="got a file that does not read as one")
case("model: checkpoint of random bytes (.safetensors)",
     with_ckpt(lambda d: (d / "w.safetensors").write_bytes(np.random.default_rng(0).bytes(300))
               and d / "w.safetensors"),
     needle="Expected a safetensors checkpoint in w.safetensors")
case("model: empty checkpoint file",
     with_ckpt(lambda d: (d / "w.pt").write_bytes(b"") or d / "w.pt"),
     needle="does not read as one")


def truncated_safetensors(d):
    from safetensors.torch import save_file

    save_file(fcn_state(d), str(d / "w.safetensors"))
    raw = (d / "w.safetensors").read_bytes()
    (d / "w.safetensors").write_bytes(raw[: len(raw) - 20])
    return d / "w.safetensors"


def truncated_pt(d):
    torch.save(fcn_state(d), d / "w.pt")
    raw = (d / "w.pt").read_bytes()
    (d / "w.pt").write_bytes(raw[: len(raw) // 2])
    return d / "w.pt"


case("model: truncated safetensors checkpoint", with_ckpt(truncated_safetensors),
     needle="may be truncated")
case("model: truncated torch.save checkpoint", with_ckpt(truncated_pt),
     needle="may be truncated")
case("model: checkpoint pickling arbitrary code (refused, nothing runs)",
     with_ckpt(lambda d: (d / "evil.pt").write_bytes(pickle.dumps(Evil())) and d / "evil.pt"),
     needle="not weights-only")
case("model: checkpoint that pickles a whole nn.Module",
     with_ckpt(lambda d: torch.save(torch.nn.Linear(2, 2), d / "m.pt") or d / "m.pt"),
     needle="not weights-only")
case("model: checkpoint that is a tensor, not a state dict",
     with_ckpt(lambda d: torch.save(torch.zeros(3), d / "t.pt") or d / "t.pt"),
     needle="Expected a state dict (parameter names to tensors) in t.pt, got a Tensor")
case("model: checkpoint with non-tensor values",
     with_ckpt(lambda d: torch.save({"0.weight": [1, 2]}, d / "l.pt") or d / "l.pt"),
     needle="got a list under '0.weight'")
case("model: checkpoint with other keys",
     with_ckpt(lambda d: torch.save({"fc.weight": torch.zeros(3, 4)}, d / "k.pt") or d / "k.pt"),
     needle="missing keys ['0.weight', '0.bias'] and unexpected keys ['fc.weight']")
case("model: checkpoint with other shapes",
     with_ckpt(lambda d: torch.save({k: torch.zeros(*v.shape, 2) for k, v in
                                     fcn_state(d).items()}, d / "s.pt") or d / "s.pt"),
     needle="of another shape, e.g. '0.weight': (4, 1, 3, 2) in the file, (4, 1, 3) in the model")
case("model: safetensors checkpoint named .pt is read by its content",
     with_ckpt(lambda d: __import__("safetensors.torch").torch.save_file(
         fcn_state(d), str(d / "w.pt")) or d / "w.pt"),
     expect="correct", check=ranked("net.py:fcn"))
case("model: training checkpoint with a nested state_dict",
     with_ckpt(lambda d: torch.save({"epoch": 3, "state_dict": fcn_state(d)}, d / "ck.pt")
               or d / "ck.pt"),
     expect="correct", check=ranked("net.py:fcn"))


# -- models whose input or output does not fit the data ----------------------------------------
case("model: Conv1d in-channels other than the series channels",
     lambda d: rank(d, net(d, seq("nn.Conv1d(3, 4, 3)", "nn.AdaptiveAvgPool1d(1)",
                                  "nn.Flatten()"))),
     needle="on an input batch of shape (30, 1, 16), got RuntimeError")
case("model: Conv1d mismatch names the channels to check",
     lambda d: rank(d, net(d, seq("nn.Conv1d(3, 4, 3)", "nn.AdaptiveAvgPool1d(1)",
                                  "nn.Flatten()"))),
     needle="check that its first layer takes 1 channel(s) of length 16")
case("model: Linear expecting another width",
     lambda d: rank(d, net(d, seq("nn.Linear(10, 4)", "nn.ReLU()", "nn.Linear(4, 3)")),
                    data=arrays(d)),
     needle="check that its first layer takes 5 input features")
case("model: series too short for the kernel",
     lambda d: rank(d, net(d, seq("nn.Conv1d(1, 4, 40)", "nn.AdaptiveAvgPool1d(1)",
                                  "nn.Flatten()"))),
     needle="got RuntimeError")
case("model: forward returning a scalar",
     lambda d: rank(d, net(d, module("self.conv(x).sum()")), "--layer", "output"),
     needle="got a 0-d tensor of shape ()")
case("model: forward returning a 1-d tensor",
     lambda d: rank(d, net(d, module("self.conv(x).mean(dim=(1, 2))")), "--layer", "output"),
     needle="got a 1-d tensor of shape (30,)")
case("model: forward returning a dict",
     lambda d: rank(d, net(d, module("{'features': self.conv(x)}")), "--layer", "output"),
     needle="got a dict with keys ['features']")
case("model: forward returning a tuple of non-tensors",
     lambda d: rank(d, net(d, module("(None, self.conv(x))")), "--layer", "output"),
     needle="got a tuple of 2 items")
case("model: forward returning None",
     lambda d: rank(d, net(d, module("None")), "--layer", "output"),
     needle="got None")
case("model: forward mixing the batch axis",
     lambda d: rank(d, net(d, module("self.conv(x).reshape(1, -1)")), "--layer", "output"),
     needle="to keep the batch axis first (batch 30)")
case("model: forward returning a tuple of tensors (first one used)",
     lambda d: rank(d, net(d, module("(self.conv(x).mean(2), x)")), "--layer", "output"),
     expect="correct", check=ranked("net.py:build"))
case("model: forward raising a Python error",
     lambda d: rank(d, net(d, module("self.nonexistent(x)"))),
     needle="got AttributeError")
case("model: default layer never runs in forward()",
     lambda d: rank(d, net(d, module("self.conv(x).mean(2)", init="self.conv = nn.Conv1d(1, 4, 3)"
                                     "\n        self.unused = nn.Linear(4, 4)"
                                     "\n        self.head = nn.Linear(4, 3)"))),
     needle="Expected layer 'unused' of model")
case("model: layer with no features",
     lambda d: rank(d, net(d, module("self.conv(x).flatten(1)[:, :0]")), "--layer", "output"),
     needle="to give at least one feature")
case("model: NaN weights in the checkpoint",
     with_ckpt(lambda d: torch.save({k: torch.full_like(v, float("nan")) for k, v in
                                     fcn_state(d).items()}, d / "nan.pt") or d / "nan.pt"),
     needle="Expected finite features from model")
case("model: forward that overflows to inf",
     lambda d: rank(d, net(d, module("torch.exp(1000 * self.conv(x).mean(2).abs() + 100)"))),
     needle="got NaN or inf")
case("model: 2-d conv model on series",
     lambda d: rank(d, net(d, seq("nn.Conv2d(3, 4, 3)", "nn.AdaptiveAvgPool2d(1)",
                                  "nn.Flatten()"))),
     needle="input batch of shape (30, 1, 16)")
case("model: conv model on images of another layout",
     lambda d: rank(d, net(d, seq("nn.Conv2d(3, 4, 3)", "nn.AdaptiveAvgPool2d(1)",
                                  "nn.Flatten()")), data=images(d)),
     needle="(batch, height, width[, channels])")
case("model: double-precision model on float32 data",
     lambda d: rank(d, net(d, "def build():\n    return nn.Sequential(nn.Conv1d(1, 4, 3), "
                              "nn.AdaptiveAvgPool1d(1), nn.Flatten()).double()\n")),
     needle="got RuntimeError")
case("model: a fitting model ranks",
     lambda d: rank(d, fcn(d)), expect="correct",
     check=lambda out, d: set(scores(out)) == {f"torch:{d / 'net.py'}:fcn",
                                               f"random:torch:{d / 'net.py'}:fcn", "raw"})
case("model: a Linear model on arrays ranks",
     lambda d: rank(d, net(d, seq("nn.Linear(5, 8)", "nn.ReLU()", "nn.Linear(8, 3)")),
                    data=arrays(d)), expect="correct", check=ranked("net.py:build"))


# -- the feature cache: corrupt entries are misses, edited code is never served stale ---------
def cached_twice(corrupt, suffix=".json"):
    """rank of the FCN once (filling the cache), then every cache file ending in ``suffix``
    handed to ``corrupt(path)``; the case reruns the same rank."""
    def argv(d):
        a = rank(d, fcn(d))
        (d / "first.json").write_text(quiet_main(a))
        files = sorted((d / "c").glob(f"*{suffix}"))
        assert files
        for p in files:
            corrupt(p)
        return a
    return argv


def same_scores(out, d):
    return scores(out) == scores((d / "first.json").read_text())


for what, corrupt in [
    ("a JSON list", lambda p: p.write_text("[1, 2, 3]")),
    ("a JSON number", lambda p: p.write_text("42")),
    ("JSON null", lambda p: p.write_text("null")),
    ("garbage", lambda p: p.write_bytes(b"\x00\xffnot json{")),
    ("empty", lambda p: p.write_text("")),
    ("an object without the checksum", lambda p: p.write_text('{"shape": [30, 4]}')),
    ("an object with a numeric checksum", lambda p: p.write_text('{"sha256": 1, "shape": 3}')),
]:
    case(f"model: cache sidecar that is {what}", cached_twice(corrupt), expect="correct",
         check=same_scores)

for what, corrupt in [
    ("random bytes", lambda p: p.write_bytes(np.random.default_rng(0).bytes(200))),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:-16])),
    ("a pickled object array", lambda p: np.save(p, np.array([{"a": 1}], dtype=object),
                                                  allow_pickle=True)),
    ("another array", lambda p: np.save(p, np.zeros((30, 4), np.float32))),
    ("an .npz archive", lambda p: p.write_bytes(_npz_bytes())),
    ("missing", lambda p: p.unlink()),
]:
    case(f"model: cache .npy entry that is {what}", cached_twice(corrupt, ".npy"),
         expect="correct", check=same_scores)


def _npz_bytes():
    buf = io.BytesIO()
    np.savez(buf, X=np.zeros(3))
    return buf.getvalue()


case("model: cache folder that is a file (features computed, not cached)",
     lambda d: (d.joinpath("c").write_text("not a folder"), rank(d, fcn(d)))[1],
     expect="correct", check=ranked("net.py:fcn"))


def edited(old, new, body=FCN, factory="fcn"):
    """rank once (filling the cache), then ``old`` -> ``new`` in net.py (same weights); the
    rerun must equal a run on a fresh cache."""
    def argv(d):
        (d / "net.py").write_text(body)
        a = rank(d, f"torch:{d / 'net.py'}:{factory}")
        first = quiet_main(a)
        (d / "net.py").write_text(body.replace(old, new))
        at = a.index("--cache-dir") + 1
        fresh = quiet_main([*a[:at], str(d / "fresh"), *a[at + 1:]])
        assert scores(fresh) != scores(first), "the edit must change the features"
        (d / "fresh.json").write_text(fresh)
        return a
    return argv


FORWARD = HEADER + module("torch.relu(self.conv(x))")
case("model: edited activation is not served stale cached features",
     edited("nn.ReLU()", "nn.GELU()"), expect="correct",
     check=lambda out, d: scores(out) == scores((d / "fresh.json").read_text()))
case("model: edited forward() is not served stale cached features",
     edited("torch.relu(", "torch.tanh(", body=FORWARD, factory="build"), expect="correct",
     check=lambda out, d: scores(out) == scores((d / "fresh.json").read_text()))


# -- names of models that do not exist or cannot load here -------------------------------------
case("model: raw with an argument", lambda d: rank(d, "raw:x"), needle="Expected plain 'raw'")
case("model: random twin of raw", lambda d: rank(d, "random:raw"),
     needle="Expected a model with weights after 'random:'")
case("model: random twin of a model without parameters",
     lambda d: rank(d, "random:" + net(d, seq("nn.Flatten()"))),
     needle="which has no parameters")
case("model: unknown backend", lambda d: rank(d, "resnet:50"), needle="Unknown model 'resnet:50'")
case("model: misspelled backend", lambda d: rank(d, "efnet-lite:0"),
     needle="did you mean 'effnet-lite'")
case("model: name without a backend", lambda d: rank(d, "resnet50"),
     needle="Expected a model name <backend>:<model>")
case("model: effnet-lite variant 9", lambda d: rank(d, "effnet-lite:9", data=images(d)),
     needle="Expected effnet-lite:0, :1 or :2")
case("model: effnet-lite input size 8", lambda d: rank(d, "effnet-lite:0@8", data=images(d)),
     needle="input size >= 32")
case("model: effnet-lite without a variant", lambda d: rank(d, "effnet-lite:", data=images(d)),
     needle="Expected effnet-lite:0, :1 or :2")
case("model: timm where it cannot import", lambda d: rank(d, "timm:resnet18", data=images(d)),
     needle="pip install timm")
case("model: torchvision where it cannot import",
     lambda d: rank(d, "torchvision:resnet18", data=images(d)),
     needle="pip install torchvision")
case("model: hf with an empty name", lambda d: rank(d, "hf:"),
     needle="Expected hf:<local path or hub id>")
case("model: hf folder that does not exist", lambda d: rank(d, f"hf:{d / 'no' / 'model'}"),
     needle="no such folder")
case("model: hf folder without config.json",
     lambda d: ((d / "m").mkdir(), rank(d, f"hf:{d / 'm'}"))[1],
     needle="with config.json, got")
case("model: hf config.json that is not JSON",
     lambda d: ((d / "m").mkdir(), (d / "m" / "config.json").write_text("{oops"),
                rank(d, f"hf:{d / 'm'}"))[-1],
     needle="does not parse")
case("model: hf config.json that is a JSON list",
     lambda d: ((d / "m").mkdir(), (d / "m" / "config.json").write_text("[1]"),
                rank(d, f"hf:{d / 'm'}"))[-1],
     needle="Expected a JSON object")
case("model: hf config of an unknown model type",
     lambda d: ((d / "m").mkdir(),
                (d / "m" / "config.json").write_text('{"model_type": "no-such-arch-xyz"}'),
                rank(d, f"hf:{d / 'm'}"))[-1],
     needle="check config.json (model_type)")
case("model: hf config without weights",
     lambda d: ((d / "m").mkdir(),
                (d / "m" / "config.json").write_text('{"model_type": "vit", "hidden_size": 16}'),
                rank(d, f"hf:{d / 'm'}"))[-1],
     needle="Expected a Hugging Face model that transformers")
case("model: hf hub id offline (not cached)",
     lambda d: rank(d, "hf:tscope-hostile/no-such-model-xyz"),
     needle="only cached models load offline (HF_HUB_OFFLINE=1)")


def tiny_vit(d, processor=True):
    from tests.tiny_models import save_tiny_vit

    return save_tiny_vit(d / "vit", processor)


case("model: hf folder without a tokenizer or image processor",
     lambda d: rank(d, tiny_vit(d, processor=False), data=images(d)),
     needle="Expected a tokenizer or an image processor")
case("model: hf image model on series data",
     lambda d: rank(d, tiny_vit(d)), needle="takes image inputs, got a series dataset")
case("model: hf image model on one-channel images",
     lambda d: rank(d, tiny_vit(d), data=images(d, channels=1)), expect="correct",
     check=ranked("vit"))


# -- --layer, layers and finetune --------------------------------------------------------------
case("model: rank --layer that does not exist",
     lambda d: rank(d, fcn(d), "--layer", "conv9"), needle="has no layer 'conv9'")
case("model: rank --layer with a did-you-mean",
     lambda d: rank(d, fcn(d), "--layer", "outptu"), needle="did you mean 'output'")
case("model: layers of a tiny FCN",
     lambda d: layers(d, fcn(d)), expect="correct",
     check=lambda out, d: (d / "out" / "layers.json").is_file())
case("model: layers of raw", lambda d: layers(d, "raw"), needle="raw")
case("model: layers of a model whose code does not import",
     lambda d: layers(d, net(d, "def build(:\n")), needle="SyntaxError at line 4")
case("model: layers of a model that does not fit the series",
     lambda d: layers(d, net(d, seq("nn.Conv1d(2, 4, 3)", "nn.ReLU()",
                                    "nn.AdaptiveAvgPool1d(1)", "nn.Flatten()"))),
     needle="channel(s) of length 16")
case("model: layers with a missing checkpoint",
     lambda d: layers(d, f"{fcn(d)}@{d / 'no.safetensors'}"), needle="no such file")
case("model: finetune of raw (cannot train)", lambda d: finetune(d, "raw"),
     needle="Expected a model whose weights can train, got 'raw'")
case("model: finetune of a model that does not fit the series",
     lambda d: finetune(d, net(d, seq("nn.Conv1d(3, 4, 3)", "nn.AdaptiveAvgPool1d(1)",
                                      "nn.Flatten()"))),
     needle="got RuntimeError")
case("model: finetune of a Linear model of another width",
     lambda d: finetune(d, net(d, seq("nn.Linear(7, 4)", "nn.ReLU()", "nn.Linear(4, 3)")),
                        data=arrays(d)),
     needle="got RuntimeError")
case("model: finetune of a model returning a scalar",
     lambda d: finetune(d, net(d, module("self.conv(x).sum()")), "--layer", "output"),
     needle="got a 0-d tensor")
case("model: finetune of a model returning a dict",
     lambda d: finetune(d, net(d, module("{'f': self.conv(x)}")), "--layer", "output"),
     needle="got a dict with keys ['f']")
case("model: finetune --layer that does not exist",
     lambda d: finetune(d, fcn(d), "--layer", "99"), needle="has no layer '99'")
case("model: finetune with a checkpoint pickling code",
     lambda d: ((d / "evil.pt").write_bytes(pickle.dumps(Evil())),
                finetune(d, f"{fcn(d)}@{d / 'evil.pt'}"))[1],
     needle="not weights-only")
case("model: finetune of a torch factory that raises",
     lambda d: finetune(d, net(d, "def build():\n    raise ValueError('bad depth')\n")),
     needle="Expected build() in net.py to build an nn.Module, got ValueError: bad depth")
case("model: finetune of a tiny FCN",
     lambda d: finetune(d, fcn(d)), expect="correct",
     check=lambda out, d: "transfer" in out)


# -- torch: declared preprocessing, undeclared images, token layers (issue: own nn.Module) ------
CNN = """
def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)){declaration}
"""


def cnn(d, declaration=""):
    """A small CNN on images; ``declaration`` follows its ``return module`` (e.g.
    ``, {'size': 16}``)."""
    return net(d, CNN.format(declaration=declaration))


case("model: torch factory returning a tuple of three",
     lambda d: rank(d, cnn(d, ", {'size': 16}, 3"), data=images(d)),
     needle="got a tuple of 3 items (Sequential, dict, int)")
case("model: torch declared preprocessing with an unknown field",
     lambda d: rank(d, cnn(d, ", {'sise': 16}"), data=images(d)),
     needle="got 'sise'; did you mean 'size'")
case("model: torch declared preprocessing with a mean of 2 values",
     lambda d: rank(d, cnn(d, ", {'size': 16, 'mean': [0.5, 0.5]}"), data=images(d)),
     needle="Expected mean to be 3 finite numbers")
case("model: torch declared preprocessing with a mean that is a string",
     lambda d: rank(d, cnn(d, ", {'size': 16, 'mean': 'imagenet'}"), data=images(d)),
     needle="Expected mean to be 3 numbers")
case("model: torch declared preprocessing with size 0",
     lambda d: rank(d, cnn(d, ", {'size': 0}"), data=images(d)),
     needle="Expected an input size that is a whole number >= 1")
case("model: torch declared preprocessing with a float size",
     lambda d: rank(d, cnn(d, ", {'size': 16.5}"), data=images(d)),
     needle="got 16.5; declare e.g. 'size': 224")
case("model: torch declared preprocessing with std 0",
     lambda d: rank(d, cnn(d, ", {'size': 16, 'std': [0.2, 0, 0.2]}"), data=images(d)),
     needle="Expected std > 0")
case("model: torch declared preprocessing with an unknown interpolation",
     lambda d: rank(d, cnn(d, ", {'size': 16, 'interpolation': 'cubic'}"), data=images(d)),
     needle="did you mean 'bicubic'")
case("model: torch declared preprocessing with crop_pct above 1",
     lambda d: rank(d, cnn(d, ", {'size': 16, 'crop_pct': 2}"), data=images(d)),
     needle="0 < crop_pct <= 1")
case("model: torch declared preprocessing of another type",
     lambda d: rank(d, cnn(d, ", 'imagenet'"), data=images(d)),
     needle="got a str; return (module, {'size': 224")
case("model: torch module.preprocessing of another type",
     lambda d: rank(d, net(d, "def build():\n    m = nn.Sequential(nn.Flatten())\n"
                              "    m.preprocessing = [224]\n    return m\n"), data=images(d)),
     needle="in module.preprocessing of build() in net.py, got a list")
case("model: torch declared series layout for images",
     lambda d: rank(d, cnn(d, ", {'size': 16, 'layout': 'NCL'}"), data=images(d)),
     needle="Expected an image layout (NCHW, NHWC, ND)")
case("model: torch declared preprocessing ranks images",
     lambda d: rank(d, cnn(d, ", {'size': 16, 'mean': [0.5] * 3, 'std': [0.5] * 3}"),
                    data=images(d)),
     expect="correct", check=ranked("net.py:build"))
case("model: torch CNN on images without declared preprocessing",
     lambda d: rank(d, cnn(d), data=images(d)),
     needle="to declare how images reach it (size, mean, std), got no preprocessing")
case("model: torch conv reading image rows as channels (would run on garbage)",
     lambda d: rank(d, net(d, seq("nn.Conv2d(8, 4, 3)", "nn.AdaptiveAvgPool2d(1)",
                                  "nn.Flatten()")), data=images(d)),
     needle="its first convolution '0' (Conv2d, 8 input channel(s)) would read the images "
            "unchanged")
case("model: torch CNN on grey images without declared preprocessing",
     lambda d: rank(d, net(d, seq("nn.Conv2d(1, 4, 3)", "nn.AdaptiveAvgPool2d(1)",
                                  "nn.Flatten()")), data=images(d, channels=1)),
     needle="to declare how images reach it")
case("model: torch CNN on images declared by --input-size/--mean/--std",
     lambda d: rank(d, cnn(d), "--input-size", "16", "--mean", "0.5", "--std", "0.5",
                    data=images(d)),
     expect="correct", check=ranked("net.py:build"))
case("model: torch flatten + Linear on raw images ranks",
     lambda d: rank(d, net(d, seq("nn.Flatten()", "nn.Linear(8 * 8 * 3, 8)", "nn.ReLU()",
                                  "nn.Linear(8, 3)")), data=images(d)),
     expect="correct", check=ranked("net.py:build"))
case("model: torch module that permutes raw images itself ranks",
     lambda d: rank(d, net(d, module("self.conv(x.permute(0, 3, 1, 2) / 255).mean(dim=(2, 3))",
                                     init="self.conv = nn.Conv2d(3, 4, 3)")), data=images(d)),
     expect="correct", check=ranked("net.py:build"))
case("model: torch token_layers naming no layer",
     lambda d: rank(d, net(d, "def build():\n    m = nn.Sequential(nn.Conv1d(1, 4, 3), "
                              "nn.Flatten())\n    m.token_layers = ['O']\n    return m\n")),
     needle="Expected module.token_layers of build() in net.py to name layers of the module, "
            "got 'O'")
case("model: torch token_layers that is a string",
     lambda d: rank(d, net(d, "def build():\n    m = nn.Sequential(nn.Conv1d(1, 4, 3), "
                              "nn.Flatten())\n    m.token_layers = '0'\n    return m\n")),
     needle="to be a list of layer names, got '0'")
case("model: torch transformer layer on series (tokens pooled)",
     lambda d: rank(d, net(d, """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(16, 8)
        self.encoder = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)

    def forward(self, x):
        return self.encoder(self.embed(x))


def build():
    torch.manual_seed(0)
    return Net()
"""), "--layer", "encoder"),
     expect="correct", check=ranked("net.py:build"))


# -- checkpoints as training scripts save them -------------------------------------------------
def wrapped(d, wrap, file="w.pt"):
    torch.save(wrap(fcn_state(d)), d / file)
    return d / file


case("model: DistributedDataParallel checkpoint ('module.' keys) ranks",
     with_ckpt(lambda d: wrapped(d, lambda s: {f"module.{k}": v for k, v in s.items()})),
     expect="correct", check=ranked("net.py:fcn"))
case("model: torch.compile checkpoint under 'model' ranks",
     with_ckpt(lambda d: wrapped(d, lambda s: {"model": {f"_orig_mod.{k}": v
                                                         for k, v in s.items()}, "epoch": 3})),
     expect="correct", check=ranked("net.py:fcn"))
case("model: checkpoint with some 'module.' keys of another model",
     with_ckpt(lambda d: wrapped(d, lambda s: {**{f"module.{k}": v for k, v in s.items()},
                                               "head.weight": torch.zeros(2)})),
     needle="got missing keys ['0.weight', '0.bias']")
case("model: checkpoint nested under 'state_dict' that pickles code",
     with_ckpt(lambda d: (d / "evil.pt").write_bytes(pickle.dumps({"state_dict": {},
                                                                   "x": Evil()}))
               and d / "evil.pt"),
     needle="not weights-only")
