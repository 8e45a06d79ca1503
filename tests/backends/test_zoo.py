"""timm: and torchvision: models, and the image preprocessing they share.

The decisions that need neither package (preprocessing from a data config or a transforms
dict, layers from a feature_info list or module names, pooling layouts, resize-and-crop) are
tested here on plain data. The tests that build real timm / torchvision models (tiny, without
pretrained weights) skip with the import error's first line where the package does not import
(e.g. a torchvision built for another torch: "operator torchvision::nms does not exist").
"""

import copy
import importlib
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferscope import InputError, OptionalDependencyError
from transferscope.backends import Preprocessing, create_backend
from transferscope.backends.images import resize_crop, resized_shape, to_tensor_batch
from transferscope.backends.zoo import (
    choose_layers,
    preprocessing_from_data_config,
    preprocessing_from_transforms,
    zoo_layouts,
)
from transferscope.data import Dataset
from transferscope.errors import first_line

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def package(name):
    """Import ``name`` or skip with why it does not import (any error, not only ImportError)."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything on import
        pytest.skip(f"{name} does not import here: {type(exc).__name__}: {first_line(exc)}")


def images(n=4, h=40, w=56, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 255, (n, h, w, 3), dtype=np.uint8)
    return Dataset("i", "image", pixels, np.arange(n) % 2)


# -- resize and crop (what timm's and torchvision's eval transforms do) ------------------------
def test_to_tensor_batch_resizes_the_shorter_side_then_centre_crops():
    from PIL import Image

    img = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    pre = Preprocessing(size=16, crop_pct=0.8, interpolation="bicubic", **IMAGENET)
    # shorter side to floor(16 / 0.8) = 20, the longer kept in proportion: int(20 * 50 / 30)
    assert resized_shape(30, 50, 16, 0.8) == (20, 33)
    assert resized_shape(50, 30, 16, 0.8) == (33, 20)
    x = to_tensor_batch([img], pre)
    assert x.shape == (1, 3, 16, 16)
    # PIL, channel by channel on [0, 1] floats, then the centre crop torchvision takes:
    # top = round((20 - 16) / 2) = 2, left = round((33 - 16) / 2) = 8 (round half to even)
    chans = [np.asarray(Image.fromarray(img[..., c].astype(np.float32) / 255, mode="F")
                        .resize((33, 20), Image.BICUBIC).crop((8, 2, 24, 18)))
             for c in range(3)]
    ref = (np.stack(chans) - np.array(IMAGENET["mean"])[:, None, None]) / \
        np.array(IMAGENET["std"])[:, None, None]
    np.testing.assert_allclose(x[0].numpy(), ref, atol=2e-5)
    # the same by torch directly
    t = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
    direct = F.interpolate(t, size=(20, 33), mode="bicubic", align_corners=False,
                           antialias=True)[0, :, 2:18, 8:24]
    mean, std = (torch.tensor(IMAGENET[k]).view(3, 1, 1) for k in ("mean", "std"))
    torch.testing.assert_close(x[0], (direct - mean) / std, rtol=0, atol=0)


def test_square_images_with_crop_pct_1_are_resized_straight_to_size():
    img = np.random.default_rng(1).integers(0, 255, (37, 37, 3), dtype=np.uint8)
    pre = Preprocessing(size=24, mean=(0.5,) * 3, std=(0.5,) * 3)
    t = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
    before = F.interpolate(t, size=(24, 24), mode="bilinear", align_corners=False,
                           antialias=True)  # what to_tensor_batch did before crop_pct
    torch.testing.assert_close(to_tensor_batch([img], pre), (before - 0.5) / 0.5, rtol=0,
                               atol=0)
    # nearest and area resize too (no antialiasing option there)
    for mode in ("nearest", "area"):
        out = resize_crop(t[0], 12, 1.0, mode)
        torch.testing.assert_close(out, F.interpolate(t, size=(12, 12), mode=mode)[0])


# -- plain data: preprocessing -----------------------------------------------------------------
def test_preprocessing_from_a_timm_data_config(caplog):
    resnet50 = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.95,
                "crop_mode": "center", **IMAGENET}
    pre = preprocessing_from_data_config(resnet50, "timm:resnet50")
    assert pre == Preprocessing(size=224, interpolation="bicubic", crop_pct=0.95, **IMAGENET)
    assert resized_shape(300, 400, pre.size, pre.crop_pct) == (235, 313)  # floor(224 / .95)
    vit = {"input_size": (3, 384, 384), "interpolation": "bicubic", "crop_pct": 1.0,
           "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    assert preprocessing_from_data_config(vit, "v").size == 384
    for bad, needle in (({"input_size": (3, 224, 448)}, "square RGB images"),
                        ({"input_size": (1, 224, 224)}, "square RGB images"),
                        ({"mean": (0.1, 0.2)}, "whose mean has 2 values")):
        with pytest.raises(InputError, match=needle.replace("(", r"\(")):
            preprocessing_from_data_config({**resnet50, **bad}, "m")
    with caplog.at_level(logging.INFO, logger="transferscope"):
        odd = preprocessing_from_data_config({**resnet50, "interpolation": "lanczos",
                                              "crop_mode": "squash"}, "m")
    assert odd.interpolation == "bicubic"
    notes = " ".join(r.getMessage() for r in caplog.records)
    assert "lanczos" in notes and "crop_mode 'squash'" in notes


def test_preprocessing_from_torchvision_transforms():
    resnet = {"crop_size": [224], "resize_size": [256], "interpolation": "bilinear",
              **IMAGENET}
    pre = preprocessing_from_transforms(resnet, "torchvision:resnet50")
    assert pre == Preprocessing(size=224, crop_pct=224 / 256, **IMAGENET)
    assert resized_shape(300, 400, pre.size, pre.crop_pct) == (256, 341)  # Resize(256)
    for crop, resize in ((224, 236), (224, 232), (384, 384), (518, 518), (240, 255)):
        p = preprocessing_from_transforms({**resnet, "crop_size": [crop],
                                           "resize_size": [resize]}, "m")
        assert resized_shape(500, 600, p.size, p.crop_pct)[0] == resize, (crop, resize)
    # a crop larger than the resize is taken at the crop size
    assert preprocessing_from_transforms({**resnet, "resize_size": [200]}, "m").crop_pct == 1


# -- plain data: layers ------------------------------------------------------------------------
TIMM_RESNET = ["conv1", "bn1", "act1", "maxpool", "layer1", "layer1.0", "layer1.0.conv1",
               "layer2", "layer2.0", "layer3", "layer3.0", "layer4", "layer4.0", "global_pool",
               "global_pool.flatten", "fc"]
TV_VIT = ["conv_proj", "encoder", "encoder.dropout", "encoder.layers",
          "encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_0.ln_1",
          "encoder.layers.encoder_layer_1", "encoder.ln", "heads", "heads.head"]
TV_VGG = ["features", *(f"features.{i}" for i in range(4)), "avgpool", "classifier",
          *(f"classifier.{i}" for i in range(7))]


def test_layers_from_feature_info_or_the_stages():
    info = ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert choose_layers(TIMM_RESNET, feature_modules=info, classifier="fc") == info
    blocks = ["blocks", "blocks.0", "blocks.0.attn", "blocks.1", "norm", "head"]
    assert choose_layers(blocks, feature_modules=["blocks.0", "blocks.1"]) == \
        ["blocks.0", "blocks.1"]
    assert choose_layers(["stages", "stages.0", "stages.1"],
                         feature_modules=["stages_0", "stages_1", "nope"]) == \
        ["stages.0", "stages.1"]
    # without feature_info: several stages stay whole, a lone container is expanded, and
    # so is a child's blocks container (torchvision's ViT encoder)
    stages = ["layer1", "layer2", "layer3", "layer4"]
    assert choose_layers(TIMM_RESNET, containers=stages, classifier="fc") == \
        ["conv1", "bn1", "act1", "maxpool", *stages, "global_pool"]
    assert choose_layers(TV_VIT, containers=["encoder.layers", "heads"],
                         classifier="heads.head") == \
        ["conv_proj", "encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
    # a classifier Sequential: its layers before the last Linear are layers too (fc6, fc7)
    assert choose_layers(TV_VGG, containers=["features", "classifier"],
                         classifier="classifier.6") == \
        [f"features.{i}" for i in range(4)] + ["avgpool"] + \
        [f"classifier.{i}" for i in range(6)]
    assert zoo_layouts(["a", "b"]) == {"a": "NLC", "b": "NLC"}
    assert zoo_layouts(["a"], channels_last=True) == {"a": "NHWC"}


# -- the packages themselves -------------------------------------------------------------------
@pytest.mark.parametrize("name, module, install", [
    ("timm:resnet50", "timm", "pip install timm"),
    ("torchvision:resnet50", "torchvision", "pip install torchvision"),
])
def test_a_zoo_that_does_not_import_is_a_one_line_error(name, module, install):
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - what the refusal must report
        with pytest.raises(OptionalDependencyError) as info:
            create_backend(name)
        msg = str(info.value)
        assert "\n" not in msg and install in msg and f"'{module}'" in msg
        assert type(exc).__name__ in msg or "not installed" in msg
    else:
        pytest.skip(f"{module} imports here")


def _timm_resnet(timm):
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=5)


def _prepared(backend, data):
    return backend.prepare(data.inputs, data)


def test_timm_cnn_layers_preprocessing_pooling_head_and_blocks():
    timm = package("timm")
    from transferscope.backends.zoo import timm_backend

    model = _timm_resnet(timm)
    b = timm_backend("timm:resnet18", model)
    assert b.layers() == ["act1", "layer1", "layer2", "layer3", "layer4", "pre_logits",
                          "output"]
    assert b.default_layer() == "pre_logits" and b.head_layer() == "output"
    config = timm.data.resolve_model_data_config(model)
    assert b.preprocessing == preprocessing_from_data_config(config, "m")
    assert b.preprocessing.interpolation == config["interpolation"]
    assert b.preprocessing.crop_pct == config["crop_pct"]
    data = images()
    x = _prepared(b, data)
    assert x.shape == (4, 3, config["input_size"][1], config["input_size"][2])
    feats = b.features(data, ["layer2", "pre_logits", "output"], batch_size=2)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        stage = model.layer2(model.layer1(model.maxpool(model.act1(model.bn1(model.conv1(x))))))
        logits = model(x)
    np.testing.assert_allclose(feats["pre_logits"], pre.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(feats["layer2"], stage.mean((2, 3)).numpy(), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(feats["output"], logits.numpy(), rtol=1e-4, atol=1e-5)
    names = [n for n, _ in b.blocks(model, "layer2")]
    assert names == ["conv1", "bn1", "layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    assert "fc" not in [n for n, _ in b.blocks(model, "pre_logits")]
    cut = b.truncate(copy.deepcopy(model), "pre_logits")
    with torch.no_grad():
        torch.testing.assert_close(b.feature_fn(cut, "pre_logits", cut=True)(x), pre,
                                   rtol=1e-4, atol=1e-5)
    headless = timm_backend("t", timm.create_model("resnet18", pretrained=False,
                                                   num_classes=0))
    assert headless.head_layer() is None


def test_timm_vit_blocks_are_pooled_over_tokens():
    timm = package("timm")
    from transferscope.backends.zoo import timm_backend

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3,
                              img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2)
    b = timm_backend("timm:vit", model, size=32)
    assert b.layers() == ["blocks.0", "blocks.1", "pre_logits", "output"]
    assert b.layouts == {"blocks.0": "NLC", "blocks.1": "NLC"}
    data = images()
    x = _prepared(b, data)
    assert x.shape == (4, 3, 32, 32)
    seen = {}
    model.blocks[0].register_forward_hook(lambda _m, _i, out: seen.setdefault("b0", out))
    feats = b.features(data, ["blocks.0", "pre_logits", "output"])
    tokens = seen["b0"]
    assert tokens.shape == (4, 1 + 16, 16)  # (B, T, C): a class token and 4 x 4 patches
    np.testing.assert_allclose(feats["blocks.0"], tokens.mean(1).numpy(), rtol=1e-5,
                               atol=1e-6)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
    np.testing.assert_allclose(feats["pre_logits"], pre.numpy(), rtol=1e-4, atol=1e-5)
    assert feats["output"].shape == (4, 3)
    assert [n for n, _ in b.blocks(model, "blocks.0")][-1] == "blocks.0"


def test_timm_names():
    timm = package("timm")
    from transferscope.backends.zoo import _check_timm_name

    _check_timm_name(timm, "resnet50")  # an architecture with weights, untagged
    _check_timm_name(timm, "resnet50.a1_in1k")
    _check_timm_name(timm, "hf-hub:timm/resnet50.a1_in1k")
    for bad, needle in (("resnet5O", "did you mean"), ("hf-hub:resnet50", "hf-hub:<org>/<name>")):
        with pytest.raises(InputError, match=needle):
            create_backend(f"timm:{bad}")
    try:
        create_backend("timm:resnet18")  # tests run offline: only cached weights load
    except InputError as exc:
        assert "in the Hugging Face cache" in str(exc) and "\n" not in str(exc)


def test_torchvision_layers_preprocessing_pooling_and_head():
    package("torchvision")
    import torchvision

    from transferscope.backends.zoo import torchvision_backend, transforms_fields

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5)
    t = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    b = torchvision_backend("torchvision:resnet18", model, transforms_fields(t))
    assert b.preprocessing == Preprocessing(size=t.crop_size[0], mean=t.mean, std=t.std,
                                            interpolation=t.interpolation.value,
                                            crop_pct=t.crop_size[0] / t.resize_size[0])
    assert b.layers() == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                          "layer4", "avgpool", "pre_logits", "output"]
    assert b.default_layer() == "pre_logits" and b.head_layer() == "output"
    data = images(h=300, w=260)
    x = _prepared(b, data)
    img = torch.from_numpy(data.inputs[0]).permute(2, 0, 1)
    ref = t(img.float() / 255)  # torchvision's own transform on the tensor
    torch.testing.assert_close(x[0], ref, rtol=0, atol=2e-5)
    feats = b.features(data, ["layer3", "pre_logits", "output"])
    with torch.no_grad():
        trunk = torch.nn.Sequential(*list(model.children())[:-1])
        pre = trunk(x).flatten(1)
        logits = model(x)
    np.testing.assert_allclose(feats["pre_logits"], pre.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(feats["output"], logits.numpy(), rtol=1e-4, atol=1e-5)
    assert [n for n, _ in b.blocks(model, "layer3")][-1] == "layer3.1"


def test_torchvision_vit_blocks_are_pooled_over_tokens():
    package("torchvision")
    import torchvision
    from torchvision.models.vision_transformer import VisionTransformer

    from transferscope.backends.zoo import torchvision_backend, transforms_fields

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                              hidden_dim=16, mlp_dim=32, num_classes=3)
    t = torchvision.models.ViT_B_16_Weights.DEFAULT.transforms()
    b = torchvision_backend("torchvision:vit", model, transforms_fields(t), size=32)
    blocks = ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
    assert b.layers() == ["conv_proj", *blocks, "pre_logits", "output"]
    assert b.inputs_of == {"pre_logits": "heads.head"}
    seen = {}
    model.encoder.layers[1].register_forward_hook(lambda _m, _i, out: seen.setdefault("b", out))
    feats = b.features(images(), [blocks[1], "pre_logits"])
    assert seen["b"].shape == (4, 17, 16)
    np.testing.assert_allclose(feats[blocks[1]], seen["b"].mean(1).numpy(), rtol=1e-5,
                               atol=1e-6)
    assert feats["pre_logits"].shape == (4, 16)


def test_torchvision_names():
    package("torchvision")
    with pytest.raises(InputError, match="did you mean 'resnet50'"):
        create_backend("torchvision:resnet5O")
    with pytest.raises(InputError, match="Expected weights of resnet50 among IMAGENET1K_V1"):
        create_backend("torchvision:resnet50.IMAGENET9K")
    try:
        create_backend("torchvision:resnet18")
    except InputError as exc:
        assert "in the torch hub cache" in str(exc) and "\n" not in str(exc)
