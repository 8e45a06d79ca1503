"""torch:<file.py>:<factory>[@<checkpoint>]: declared preprocessing, undeclared images refused
before a convolution misreads them, training checkpoints unwrapped (with a note), the source
head, and token outputs. Every model is a real torch module; nothing is mocked."""

import logging

import numpy as np
import pytest
import torch
from torch import nn

from transferscope import InputError
from transferscope.backends import Preprocessing, create_backend
from transferscope.backends.images import to_tensor_batch
from transferscope.backends.torch_module import TorchModuleBackend, pool
from transferscope.data import Dataset
from transferscope.features import extract_source_probs

# A small ResNet with BasicBlocks, the way torchvision writes it (no torchvision needed).
RESNET = '''
import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class ResNet(nn.Module):
    def __init__(self, classes=5, width=8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, 2),
                                    BasicBlock(2 * width, 2 * width))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet():
    torch.manual_seed(0)
    return ResNet()


DECLARED = {"size": 16, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def declared():
    return resnet(), DECLARED


def attribute():
    net = resnet()
    net.preprocessing = DECLARED
    return net


def as_object():
    from transferscope.backends import Preprocessing

    return resnet(), Preprocessing(**DECLARED)
'''

PRE = Preprocessing(size=16, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@pytest.fixture
def net(tmp_path):
    """The ``torch:`` spec prefix of the ResNet file."""
    (tmp_path / "net.py").write_text(RESNET)
    return f"torch:{tmp_path / 'net.py'}"


def images(n=6, h=12, w=20, channels=3, seed=0):
    shape = (n, h, w, channels) if channels else (n, h, w)
    pixels = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    return Dataset("i", "image", pixels, np.arange(n) % 2)


def write(tmp_path, body, name="m.py"):
    (tmp_path / name).write_text("import torch\nfrom torch import nn\n\n" + body)
    return f"torch:{tmp_path / name}"


def one_line_error(spec, *, data=None, layers=None, **kw):
    with pytest.raises(InputError) as info:
        b = create_backend(spec, **kw)
        if data is not None:
            b.features(data, layers or [b.default_layer()])
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("Expected")
    return msg


def received(backend, data):
    """What the module's forward receives for ``data`` (a pre-hook on the module itself)."""
    box = []
    h = backend.module.register_forward_pre_hook(lambda _m, inp: box.append(inp[0].clone()))
    try:
        backend.features(data, [backend.default_layer()], batch_size=len(data))
    finally:
        h.remove()
    return box[-1]  # (an undeclared image model is probed with one sample first)


# -- declared preprocessing ------------------------------------------------------------------
@pytest.mark.parametrize("factory", ["declared", "attribute", "as_object"])
def test_declared_images_reach_the_module_resized_and_normalised(net, factory):
    b = create_backend(f"{net}:{factory}")
    assert b.preprocessing == PRE
    data = images()
    x = received(b, data)
    assert x.shape == (6, 3, 16, 16) and x.dtype == torch.float32
    # exactly what effnet-lite's (every image model's) preprocessing gives
    torch.testing.assert_close(x, to_tensor_batch(data.inputs, PRE), rtol=0, atol=0)
    feats = b.features(data, ["layer2", "output"])
    with torch.no_grad():
        by_hand = b.module(to_tensor_batch(data.inputs, PRE))
    np.testing.assert_allclose(feats["output"], by_hand.numpy(), rtol=1e-5, atol=1e-6)
    assert feats["layer2"].shape == (6, 16)


def test_declared_layouts_nhwc_and_flat(tmp_path):
    spec = write(tmp_path, """
class Perm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):  # takes (B, H, W, C)
        return self.conv(x.permute(0, 3, 1, 2)).mean(dim=(2, 3))


def nhwc():
    torch.manual_seed(0)
    return Perm(), {"size": 8, "layout": "NHWC"}


def flat():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3 * 8 * 8, 4)), {"size": 8, "layout": "ND"}


def ncl():
    return nn.Sequential(nn.Conv1d(3, 4, 3)), {"size": 8, "layout": "NCL"}
""")
    data = images()
    ref = to_tensor_batch(data.inputs, Preprocessing(size=8))
    x = received(create_backend(f"{spec}:nhwc"), data)
    torch.testing.assert_close(x, ref.permute(0, 2, 3, 1), rtol=0, atol=0)
    x = received(create_backend(f"{spec}:flat"), data)
    torch.testing.assert_close(x, ref.flatten(1), rtol=0, atol=0)
    msg = one_line_error(f"{spec}:ncl", data=data)
    assert "Expected an image layout (NCHW, NHWC, ND)" in msg and "'NCL'" in msg


def test_declaration_leaves_arrays_and_series_unchanged(tmp_path):
    spec = write(tmp_path, """
def series():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten()), {"size": 8}
""")
    x = np.random.default_rng(0).standard_normal((5, 1, 12)).astype(np.float32)
    b = create_backend(f"{spec}:series")
    got = received(b, Dataset("s", "series", x, np.arange(5) % 2))
    torch.testing.assert_close(got, torch.from_numpy(x), rtol=0, atol=0)


@pytest.mark.parametrize("declaration, needle", [
    ("{'size': 0}", "whole number >= 1"),
    ("{'size': 16.5}", "whole number >= 1"),
    ("{'size': '16'}", "whole number >= 1"),
    ("{'sise': 16}", "did you mean 'size'"),
    ("{'mean': [0.5, 0.5]}", "mean to be 3 finite numbers"),
    ("{'mean': 'imagenet'}", "mean to be 3 numbers"),
    ("{'std': [0.2, 0.0, 0.2]}", "std > 0"),
    ("{'interpolation': 'cubic'}", "did you mean 'bicubic'"),
    ("{'layout': 'NWHC'}", "layout among"),
    ("{'crop_pct': 1.5}", "0 < crop_pct <= 1"),
    ("42", "got a int"),
    ("['size', 16]", "got a list"),
])
def test_bad_declarations_are_one_line(tmp_path, declaration, needle):
    spec = write(tmp_path, f"def build():\n    return nn.Linear(2, 2), {declaration}\n")
    msg = one_line_error(f"{spec}:build")
    assert needle in msg and "build() in m.py" in msg
    spec = write(tmp_path, "def build():\n    net = nn.Linear(2, 2)\n"
                           f"    net.preprocessing = {declaration}\n    return net\n", "a.py")
    msg = one_line_error(f"{spec}:build")
    assert needle in msg and "module.preprocessing" in msg


def test_factory_tuples_other_than_module_and_declaration_are_refused(tmp_path):
    spec = write(tmp_path, "def three():\n    return nn.Linear(2, 2), {}, 3\n"
                           "def swapped():\n    return {}, nn.Linear(2, 2)\n")
    assert "got a tuple of 3 items (Linear, dict, int)" in one_line_error(f"{spec}:three")
    assert "got a tuple of 2 items (dict, Linear)" in one_line_error(f"{spec}:swapped")


def test_a_submodule_or_method_named_preprocessing_is_not_a_declaration(tmp_path):
    spec = write(tmp_path, """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.preprocessing = nn.Flatten()
        self.fc = nn.Linear(8 * 8 * 3, 2)

    def forward(self, x):
        return self.fc(self.preprocessing(x))


def build():
    return Net()
""")
    b = create_backend(f"{spec}:build")
    assert b.preprocessing is None and b.layers() == ["preprocessing", "fc", "output"]
    assert b.features(images(h=8, w=8), ["fc"])["fc"].shape == (6, 2)


def test_overriding_preprocessing_changes_what_the_module_gets_and_its_identity(net):
    data = images()
    base = create_backend(f"{net}:declared")
    big = create_backend(f"{net}:declared", preprocessing={"size": 24})
    assert big.preprocessing == Preprocessing(size=24, mean=PRE.mean, std=PRE.std)
    assert received(big, data).shape == (6, 3, 24, 24)
    assert big.identity() != base.identity()
    assert base.identity().rsplit("|", 1)[0] == big.identity().rsplit("|", 1)[0]  # only p=
    a, b = (m.features(data, ["output"])["output"] for m in (base, big))
    assert not np.allclose(a, b)
    # an undeclared module gets images prepared once the CLI's flags declare them
    raw = create_backend(f"{net}:resnet")
    flags = create_backend(f"{net}:resnet", preprocessing={"size": 16, "mean": list(PRE.mean),
                                                            "std": list(PRE.std)})
    assert raw.preprocessing is None and flags.preprocessing == PRE
    torch.testing.assert_close(received(flags, data), to_tensor_batch(data.inputs, PRE))
    np.testing.assert_allclose(flags.features(data, ["output"])["output"], a, rtol=1e-6)
    assert flags.identity() != raw.identity()
    msg = one_line_error(f"{net}:resnet", preprocessing={"mean": [0.5, 0.5]})
    assert "mean to be 3 finite numbers" in msg


# -- undeclared images -------------------------------------------------------------------------
CNN = """
def cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


def rows_as_channels():  # in_channels == image height: torch would run it on garbage
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(8, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class Scaled(nn.Module):  # rescales but never permutes: still (B, H, W, C)
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 4, 3)

    def forward(self, x):
        return self.conv(x / 255).mean(dim=(2, 3))


def scaled():
    torch.manual_seed(0)
    return Scaled()


class Own(nn.Module):  # prepares the raw images itself: legitimate
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x.permute(0, 3, 1, 2) / 255).mean(dim=(2, 3))


def own():
    torch.manual_seed(0)
    return Own()


def flat():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 3, 4), nn.ReLU(), nn.Linear(4, 2))
"""


@pytest.mark.parametrize("factory", ["cnn", "rows_as_channels", "scaled"])
def test_undeclared_images_into_a_convolution_are_refused_before_it_runs(tmp_path, factory):
    spec = write(tmp_path, CNN)
    b = create_backend(f"{spec}:{factory}")
    conv = next(m for m in b.module.modules() if isinstance(m, nn.Conv2d))
    ran = []
    conv.register_forward_hook(lambda *a: ran.append(1))
    with pytest.raises(InputError) as info:
        b.features(images(h=8, w=8), [b.default_layer()])
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"Expected model 'torch:{tmp_path / 'm.py'}:"
                                              f"{factory}' to declare how images reach it")
    assert "(batch, height, width[, channels])" in msg and "shape (6, 8, 8, 3)" in msg
    assert "return (module, {'size': 8, 'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, " \
           "0.225]}) from the factory" in msg and "--input-size/--mean/--std" in msg
    assert ran == []  # the convolution never ran: not on the probe, not on the data
    # grey images too
    with pytest.raises(InputError, match="to declare how images reach it"):
        create_backend(f"{spec}:{factory}").features(images(h=8, w=8, channels=0), ["output"])


def test_undeclared_modules_that_take_raw_images_keep_working(tmp_path):
    spec = write(tmp_path, CNN)
    data = images(h=8, w=8)
    raw = torch.as_tensor(data.inputs, dtype=torch.float32)  # what they are documented to get
    for factory in ("own", "flat"):
        b = create_backend(f"{spec}:{factory}")
        torch.testing.assert_close(received(b, data), raw, rtol=0, atol=0)
        with torch.no_grad():
            expected = b.module(raw).numpy()
        np.testing.assert_allclose(b.features(data, ["output"])["output"], expected, rtol=1e-6)


# -- checkpoints as training scripts save them -------------------------------------------------
def trained(net):
    """The ResNet backend and a state dict of other weights (as if trained)."""
    b = create_backend(f"{net}:resnet")
    state = {k: (v + 0.5 if v.is_floating_point() else v + 1)
             for k, v in b.module.state_dict().items()}
    return b, state


def load(spec, path, caplog):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="transferscope"):
        b = create_backend(f"{spec}@{path}")
    return b, [r.getMessage() for r in caplog.records if r.name == "transferscope"]


def assert_weights(b, state):
    own = b.module.state_dict()
    assert set(own) == set(state)
    for k, v in state.items():
        assert torch.equal(own[k], v), k


def test_training_checkpoints_are_unwrapped_with_a_note(net, tmp_path, caplog):
    b, state = trained(net)
    n = len(state)
    ddp = {f"module.{k}": v for k, v in state.items()}  # what DistributedDataParallel saves
    compiled = torch.compile(b.module)  # torch.compile wraps the module as _orig_mod
    compiled.load_state_dict({f"_orig_mod.{k}": v for k, v in state.items()})
    compiled_state = compiled.state_dict()
    assert all(k.startswith("_orig_mod.") for k in compiled_state)
    cases = {
        "plain.pt": (state, []),
        "sd.pt": ({"state_dict": state, "epoch": 3}, ["took the state dict under 'state_dict'"]),
        "model.pt": ({"model": state, "optimizer": {"lr": torch.tensor(0.1)},
                      "epoch": 7}, ["took the state dict under 'model'"]),
        "net.pt": ({"net": state, "step": 1}, ["took the state dict under 'net'"]),
        "ddp.pt": (ddp, [f"removed the 'module.' prefix from {n} keys"]),
        "compiled.pt": (compiled_state, [f"removed the '_orig_mod.' prefix from {n} keys"]),
        "ddp_compiled.pt": ({f"module.{k}": v for k, v in compiled_state.items()},
                            [f"removed the 'module._orig_mod.' prefix from {n} keys"]),
        "compiled_ddp.pt": ({f"_orig_mod.{k}": v for k, v in ddp.items()},
                            [f"removed the '_orig_mod.module.' prefix from {n} keys"]),
        "nested_ddp.pt": ({"model_state_dict": ddp, "epoch": 2},
                          ["took the state dict under 'model_state_dict'",
                           f"removed the 'module.' prefix from {n} keys"]),
        "lightning.pt": ({"state_dict": {f"model.{k}": v for k, v in state.items()}},
                         ["took the state dict under 'state_dict'",
                          f"removed the 'model.' prefix from {n} keys"]),
    }
    for file, (saved, steps) in cases.items():
        torch.save(saved, tmp_path / file)
        loaded, notes = load(f"{net}:resnet", tmp_path / file, caplog)
        assert_weights(loaded, state)
        assert notes == ([f"checkpoint {file}: {' and '.join(steps)}"] if steps else []), file
    from safetensors.torch import save_file

    save_file(ddp, str(tmp_path / "ddp.safetensors"))
    loaded, notes = load(f"{net}:resnet", tmp_path / "ddp.safetensors", caplog)
    assert_weights(loaded, state)
    assert notes == [f"checkpoint ddp.safetensors: removed the 'module.' prefix from {n} keys"]
    # the unwrapped weights give the trained model's features
    data = images()
    direct = create_backend(f"{net}:declared")
    direct.module.load_state_dict(state)
    fitted = create_backend(f"{net}:declared@{tmp_path / 'ddp_compiled.pt'}")
    np.testing.assert_allclose(fitted.features(data, ["output"])["output"],
                               direct.features(data, ["output"])["output"], rtol=1e-6)


def test_the_cli_prints_the_unwrapping_as_a_note(net, tmp_path, capsys):
    from transferscope.cli import main

    b, state = trained(net)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "b.pt")
    data = images(n=12)
    np.savez(tmp_path / "i.npz", X=data.inputs, y=data.labels)
    code = main(["rank", "--data", str(tmp_path / "i.npz"), "--model",
                 f"{net}:declared@{tmp_path / 'b.pt'}", "--metric", "logme", "--subsamples",
                 "0", "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 0
    assert (f"tscope: note: checkpoint b.pt: took the state dict under 'state_dict' and "
            f"removed the 'module.' prefix from {len(state)} keys\n") in err


def test_prefixes_are_only_removed_when_every_key_has_them_or_they_then_fit(tmp_path, caplog):
    spec = write(tmp_path, """
class Wrapper(nn.Module):  # a module whose own keys start with 'module.'
    def __init__(self):
        super().__init__()
        self.module = nn.Linear(3, 2)


def wrapper():
    torch.manual_seed(0)
    return Wrapper()


def two():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
""")
    w = create_backend(f"{spec}:wrapper")
    state = {k: v + 1 for k, v in w.module.state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    loaded, notes = load(f"{spec}:wrapper", tmp_path / "w.pt", caplog)
    assert_weights(loaded, state)
    assert notes == []  # keys that fit are left alone
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ww.pt")
    loaded, notes = load(f"{spec}:wrapper", tmp_path / "ww.pt", caplog)
    assert_weights(loaded, state)
    assert notes == ["checkpoint ww.pt: removed the 'module.' prefix from 2 keys"]
    # some keys with the prefix, and removing it does not make them fit: left as they are
    two = create_backend(f"{spec}:two").module.state_dict()
    mixed = {("module." + k if k.startswith("0.") else k): v for k, v in two.items()}
    mixed["2.weight"] = torch.ones(2)  # another architecture's key
    torch.save(mixed, tmp_path / "mixed.pt")
    msg = one_line_error(f"{spec}:two@{tmp_path / 'mixed.pt'}")
    assert "missing keys ['0.weight', '0.bias']" in msg and "'module.0.weight'" in msg
    # ...but removed where that makes them fit
    torch.save({("module." + k if k.startswith("0.") else k): v + 1 for k, v in two.items()},
               tmp_path / "fits.pt")
    loaded, notes = load(f"{spec}:two", tmp_path / "fits.pt", caplog)
    assert_weights(loaded, {k: v + 1 for k, v in two.items()})
    assert notes == ["checkpoint fits.pt: removed the 'module.' prefix from 2 keys"]


def test_wrapped_checkpoints_are_still_weights_only(net, tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    _, state = trained(net)
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"state_dict": state, "hook": Evil()}))
    msg = one_line_error(f"{net}:resnet@{tmp_path / 'evil.pt'}")
    assert "not weights-only" in msg and not marker.exists()


# -- the source head ---------------------------------------------------------------------------
def test_a_module_ending_in_a_classifier_is_the_source_head(net, tmp_path):
    b = create_backend(f"{net}:declared")
    assert b.head_layer() == "output"
    data = images()
    probs = extract_source_probs(b, data)
    with torch.no_grad():
        logits = b.module(to_tensor_batch(data.inputs, PRE)).double()
    np.testing.assert_allclose(probs, torch.softmax(logits, 1).numpy(), atol=1e-6)
    spec = write(tmp_path, """
def body():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU())

def one():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

def soft():
    return nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
""")
    assert create_backend(f"{spec}:body").head_layer() is None
    assert create_backend(f"{spec}:one").head_layer() is None
    soft = create_backend(f"{spec}:soft")
    assert soft.head_layer() == "output" and create_backend(f"random:{spec}:soft").head_layer()
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    probs = extract_source_probs(soft, Dataset("a", "array", x, np.arange(5) % 2))
    with torch.no_grad():
        np.testing.assert_allclose(probs, soft.module(torch.from_numpy(x)).numpy(), atol=1e-6)


# -- token outputs ------------------------------------------------------------------------------
TOKENS = """
class Tokens(nn.Module):
    def __init__(self, batch_first=True):
        super().__init__()
        self.embed = nn.Linear(4, 8)  # (B, T, 4) -> (B, T, 8): a 3-d output
        self.encoder = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0,
                                                  batch_first=batch_first)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(1))


def tokens():
    torch.manual_seed(0)
    return Tokens()


def declared():
    net = tokens()
    net.token_layers = ["embed"]
    return net


def misnamed():
    net = tokens()
    net.token_layers = ["embedd"]
    return net


def not_a_list():
    net = tokens()
    net.token_layers = "embed"
    return net
"""


def test_transformer_outputs_are_pooled_over_tokens(tmp_path):
    spec = write(tmp_path, TOKENS)
    x = np.random.default_rng(0).standard_normal((5, 7, 4)).astype(np.float32)  # (B, T, 4)
    data = Dataset("s", "series", x, np.arange(5) % 2)
    b = create_backend(f"{spec}:tokens")
    assert b.layouts == {"encoder": "NLC"}  # a batch-first transformer layer is found
    feats = b.features(data, ["embed", "encoder"])
    with torch.no_grad():
        emb = b.module.embed(torch.from_numpy(x))
        enc = b.module.encoder(emb)
    np.testing.assert_allclose(feats["encoder"], enc.mean(1).numpy(), rtol=1e-5, atol=1e-6)
    # undeclared, a 3-d output keeps the conv1d reading: (B, C, L) averaged over L
    np.testing.assert_allclose(feats["embed"], emb.mean(2).numpy(), rtol=1e-5, atol=1e-6)
    d = create_backend(f"{spec}:declared")
    assert d.layouts == {"encoder": "NLC", "embed": "NLC"}
    np.testing.assert_allclose(d.features(data, ["embed"])["embed"], emb.mean(1).numpy(),
                               rtol=1e-5, atol=1e-6)
    assert d.identity() != b.identity()  # how a layer is pooled enters the identity
    # the differentiable feature function pools the same way (fine-tuning, cut or not)
    for cut in (False, True):
        fn = d.feature_fn(d.module, "embed", cut=cut)
        torch.testing.assert_close(fn(torch.from_numpy(x)), emb.mean(1))
    assert "did you mean 'embed'" in one_line_error(f"{spec}:misnamed")
    assert "to be a list of layer names, got 'embed'" in one_line_error(f"{spec}:not_a_list")


def test_pool_layouts():
    t = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    torch.testing.assert_close(pool(t), t.mean(2))
    torch.testing.assert_close(pool(t, layout="NLC"), t.mean(1))
    torch.testing.assert_close(pool(t, layout="NHWC"), t.mean(1))
    m = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    torch.testing.assert_close(pool(m), m.mean((2, 3)))
    torch.testing.assert_close(pool(m, layout="NLC"), m.mean((2, 3)))  # tokens only when 3-d
    torch.testing.assert_close(pool(m, layout="NHWC"), m.mean((1, 2)))


# -- layers read at a submodule's input (pre-logits) -------------------------------------------
def test_pre_logits_layer_reads_the_classifier_input_and_cuts_there(net):
    user = create_backend(f"{net}:declared")
    module = user.module
    b = TorchModuleBackend("t", module, block_names=["layer1", "layer2", "pre_logits"],
                           default="pre_logits", inputs_of={"pre_logits": "fc"},
                           head="output")
    assert b.layers() == ["layer1", "layer2", "pre_logits", "output"]
    assert b.head_layer() == "output"
    x = to_tensor_batch(images().inputs, PRE)
    with torch.no_grad():
        h = module.relu(module.bn1(module.conv1(x)))
        pre = torch.flatten(module.avgpool(module.layer2(module.layer1(h))), 1)
    data = Dataset("x", "array", x.numpy(), np.arange(6) % 2)  # prepared tensors, as arrays
    feats = b.features(data, ["pre_logits", "output"])
    np.testing.assert_allclose(feats["pre_logits"], pre.numpy(), rtol=1e-5, atol=1e-6)
    assert [n for n, _ in b.blocks(module, "pre_logits")][-1] == "layer2.1"  # not fc
    import copy

    cut = b.truncate(copy.deepcopy(module), "pre_logits")
    assert isinstance(cut.fc, nn.Identity) and isinstance(module.fc, nn.Linear)
    with torch.no_grad():
        torch.testing.assert_close(b.feature_fn(cut, "pre_logits", cut=True)(x), pre)
        torch.testing.assert_close(b.feature_fn(copy.deepcopy(module), "pre_logits")(x), pre)
    assert b.identity() != TorchModuleBackend("t", module, block_names=["layer1"],
                                              default="layer1").identity()


def test_declared_normalisation_without_a_size_keeps_each_image_size(tmp_path):
    spec = write(tmp_path, """
def norm_only():
    torch.manual_seed(0)
    return (nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
""")
    b = create_backend(f"{spec}:norm_only")
    data = images(h=9, w=13)
    x = received(b, data)
    expected = (torch.from_numpy(data.inputs).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(x, expected)
    mixed = Dataset("m", "image", [data.inputs[0], data.inputs[1][:8]], [0, 1])
    with pytest.raises(InputError, match=r"Expected images of one size when no input size is "
                                         r"declared, got \(9, 13\) and \(8, 13\) pixels"):
        b.features(mixed, ["output"])
