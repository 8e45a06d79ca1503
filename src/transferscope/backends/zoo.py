"""Optional model zoos: ``timm:<name>`` and ``torchvision:<name>``, active when they import.

Both load their pretrained weights through their own caches (Hugging Face hub / torch hub):
offline that works only for weights already cached; otherwise the error says so. Layers are the
model's direct children; the default layer is the one before the classifier.
"""

from __future__ import annotations

from transferscope.backends.base import Preprocessing, register_backend
from transferscope.backends.images import ImageModuleBackend
from transferscope.errors import InputError, OptionalDependencyError, require


def _torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]


def _import(module: str, extra: str, purpose: str, install: str):
    """``require`` that also turns a package which is installed but fails to import (e.g. a
    torchvision built for another torch) into a one-line error naming what to install."""
    try:
        return require(module, extra, purpose, install=install)
    except OptionalDependencyError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything on import
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        first = (lines[0] if lines else "")[:120]
        raise OptionalDependencyError(
            f"{purpose} need the optional package '{module}', which is installed but does not "
            f"import ({type(exc).__name__}: {first}); install a release that fits torch "
            f"{_torch_version()}: {install}"
        ) from None


def _children_backend(name, model, size, mean, std, classifier_names):
    children = [n for n, _ in model.named_children()]
    head = [c for c in children if c in classifier_names]
    default = children[children.index(head[0]) - 1] if head else children[-1]
    return ImageModuleBackend(name, model.eval(), block_names=children, default=default,
                              preprocessing=Preprocessing(size=size, mean=mean, std=std))


@register_backend("timm")
def _timm(name):
    arg = name.arg
    timm = _import("timm", "timm", "timm models",
                   install=f"pip install timm torchvision (the torchvision built for torch "
                           f"{_torch_version()})")
    if arg not in timm.list_models(pretrained=True):
        raise InputError(f"Expected a pretrained timm model name, got {arg!r}; see "
                         "timm.list_models(pretrained=True)")
    try:
        model = timm.create_model(arg, pretrained=True)
    except Exception as exc:  # network or cache failures surface as many types
        raise InputError(
            f"Could not load timm weights for {arg!r} ({type(exc).__name__}); offline, only "
            "weights already in the Hugging Face cache load"
        ) from None
    cfg = timm.data.resolve_data_config({}, model=model)
    return _children_backend(f"timm:{arg}", model, cfg["input_size"][-1], cfg["mean"],
                             cfg["std"], ("head", "fc", "classifier"))


@register_backend("torchvision")
def _torchvision(name):
    arg = name.arg
    tv = _import("torchvision.models", "torchvision", "torchvision models",
                 install=f"pip install torchvision (the release built for torch "
                         f"{_torch_version()})")
    try:
        weights = tv.get_model_weights(arg).DEFAULT
        model = tv.get_model(arg, weights=weights)
    except ValueError:
        raise InputError(f"Expected a torchvision model name, got {arg!r}; see "
                         "torchvision.models.list_models()") from None
    except Exception as exc:
        raise InputError(
            f"Could not load torchvision weights for {arg!r} ({type(exc).__name__}); offline, "
            "only weights already in the torch hub cache load"
        ) from None
    t = weights.transforms()
    return _children_backend(f"torchvision:{arg}", model, t.crop_size[0], t.mean, t.std,
                             ("fc", "classifier", "heads", "head"))
