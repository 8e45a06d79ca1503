"""Optional model zoos: ``timm:<name>`` and ``torchvision:<name>``, active when they import.

``timm:<name>`` takes every architecture with pretrained weights (``timm:resnet50``, a tagged
``timm:resnet50.a1_in1k``) and Hugging Face hub ids (``timm:hf-hub:<org>/<name>``);
``torchvision:<name>`` the classification models (``torchvision:resnet50`` with its default
weights, ``torchvision:resnet50.IMAGENET1K_V1`` for another). ``@<size>`` sets another input
size. Both load their weights through their own caches (Hugging Face hub / torch hub): offline
that works only for weights already cached; otherwise the error says so.

What a model is given and read from, decided by plain functions of plain data (testable without
the packages):

- preprocessing: timm's data config (:func:`preprocessing_from_data_config`), torchvision's
  weights transforms (:func:`preprocessing_from_transforms`): input size, resize (shorter side
  to ``size / crop_pct``, centre crop), interpolation, mean, std;
- layers (:func:`choose_layers`): the modules timm's ``feature_info`` names (CNN stages, a
  ViT's ``blocks.<i>``), else the stages or blocks among the children; then ``pre_logits``
  (the classifier's input: the default layer) and ``output`` (the class logits: the source
  head for LEEP and NCE);
- pooling (:func:`zoo_layouts`): a 3-d output is (B, T, C) tokens, averaged over T; a
  channels-last model's maps (timm's ``output_fmt`` NHWC, torchvision's Swin) over H and W.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from transferscope.backends.base import Preprocessing, register_backend
from transferscope.backends.images import ImageModuleBackend
from transferscope.errors import InputError, OptionalDependencyError, first_line, note, require
from transferscope.registry import suggest

PRE_LOGITS = "pre_logits"
#: Resize modes of the zoos that :func:`~transferscope.backends.images.to_tensor_batch` does
#: not have, and the one used instead.
_INTERPOLATION_STANDINS = {"box": "area", "hamming": "bicubic", "lanczos": "bicubic",
                           "random": "bilinear"}
#: Containers whose items are a model's blocks or stages (expanded into layers).
_STAGE_CONTAINERS = ("features", "blocks", "layers", "stages", "trunk_output")


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
        raise OptionalDependencyError(
            f"{purpose} need the optional package '{module}', which is installed but does not "
            f"import ({type(exc).__name__}: {first_line(exc, 120)}); install a release that "
            f"fits torch {_torch_version()}: {install}"
        ) from None


def _install_timm() -> str:
    return (f"pip install timm torchvision (the torchvision built for torch "
            f"{_torch_version()})")


def _install_torchvision() -> str:
    return f"pip install torchvision (the release built for torch {_torch_version()})"


# -- plain functions of plain data ---------------------------------------------------------------
def _interpolation(mode, name: str) -> str:
    mode = str(getattr(mode, "value", mode)).lower()
    if mode in _INTERPOLATION_STANDINS:
        note(f"{name}: resizing with {_INTERPOLATION_STANDINS[mode]} interpolation where the "
             f"model's own preprocessing uses {mode}")
        return _INTERPOLATION_STANDINS[mode]
    return mode


def _three(values, what: str, name: str) -> tuple:
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise InputError(f"Expected a model taking RGB images, got {name!r}, whose {what} has "
                         f"{len(values)} values; pick an RGB model")
    return values


def preprocessing_from_data_config(config: dict, name: str) -> Preprocessing:
    """A timm model's preprocessing from its data config.

    Parameters
    ----------
    config : dict
        What ``timm.data.resolve_model_data_config(model)`` returns: ``input_size`` (C, H, W),
        ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``, ``std``.
    name : str
        The model name (for messages).

    Returns
    -------
    Preprocessing
        Size H, the interpolation, crop_pct (at most 1), mean and std, layout NCHW.

    Raises
    ------
    InputError
        For a model that does not take square RGB images.
    """
    size = tuple(int(v) for v in config.get("input_size", (3, 224, 224)))
    if len(size) != 3 or size[0] != 3 or size[1] != size[2]:
        raise InputError(f"Expected a model taking square RGB images, got {name!r}, whose data "
                         f"config asks for input_size {size} (channels, height, width); pick "
                         "another model")
    mode = config.get("crop_mode") or "center"
    if mode != "center":
        note(f"{name}: its data config asks for crop_mode {mode!r}; images are resized on the "
             "shorter side and centre-cropped instead")
    crop_pct = min(float(config.get("crop_pct") or 1.0), 1.0)
    return Preprocessing(size=size[-1], mean=_three(config.get("mean", (0.0,)), "mean", name),
                         std=_three(config.get("std", (1.0,)), "std", name),
                         interpolation=_interpolation(config.get("interpolation", "bilinear"),
                                                      name),
                         crop_pct=crop_pct)


def preprocessing_from_transforms(transforms: dict, name: str) -> Preprocessing:
    """A torchvision model's preprocessing from its weights' evaluation transforms.

    Parameters
    ----------
    transforms : dict
        The fields of ``weights.transforms()`` (``ImageClassification``): ``crop_size`` and
        ``resize_size`` (lists of one int: the crop, and the shorter side it is taken from),
        ``interpolation`` (a name or an ``InterpolationMode``), ``mean``, ``std``.
    name : str
        The model name (for messages).

    Returns
    -------
    Preprocessing
        Size = the crop, ``crop_pct`` = crop / resize (so the shorter side is resized to
        ``resize_size``), the interpolation, mean and std.
    """
    crop = transforms["crop_size"]
    crop = int(crop[0] if isinstance(crop, Sequence) else crop)
    resize = transforms.get("resize_size") or [crop]
    if isinstance(resize, Sequence) and len(resize) > 1:
        note(f"{name}: its transforms resize to {list(resize)}; images are resized on the "
             "shorter side and centre-cropped instead")
    resize = int(resize[0] if isinstance(resize, Sequence) else resize)
    return Preprocessing(size=crop, mean=_three(transforms["mean"], "mean", name),
                         std=_three(transforms["std"], "std", name),
                         interpolation=_interpolation(transforms.get("interpolation",
                                                                     "bilinear"), name),
                         crop_pct=min(crop / max(resize, 1), 1.0))


def choose_layers(module_names: Sequence[str], *, feature_modules: Sequence[str] = (),
                  containers: Sequence[str] = (), classifier: str | None = None) -> list[str]:
    """The layers of a zoo model, in forward order (without ``pre_logits`` and ``output``).

    Parameters
    ----------
    module_names : sequence of str
        The model's ``named_modules()`` names, in order.
    feature_modules : sequence of str
        The modules timm's ``feature_info`` names (CNN stages, a ViT's ``blocks.<i>``); those
        that exist are the layers (``stages_1`` is read as ``stages.1``).
    containers : sequence of str
        The names of the ``Sequential`` / ``ModuleList`` modules.
    classifier : str, optional
        The classifier's name: the children from it on are not layers.

    Returns
    -------
    list of str
        Without feature modules: the direct children before the classifier, a child that holds
        the blocks or stages (``features``, ``blocks``, ``layers``, ``stages``, a single
        container among the children, or such a container inside a child: torchvision's
        ``encoder.layers``) expanded into its items.
    """
    names = [n for n in module_names if n]
    known, boxes = set(names), set(containers)
    out: list[str] = []
    for m in feature_modules:
        m = m if m in known else m.replace("_", ".")
        if m in known and m not in out:
            out.append(m)
    if out:
        return out

    def items(parent):
        return [n for n in names if n.startswith(parent + ".") and "." not in n[len(parent) + 1:]]

    def holds(child, name):
        return name == child or name.startswith(child + ".")

    children = [n for n in names if "." not in n]
    body, tail = [], []
    for child in children:
        if classifier is not None and holds(child, classifier):
            if child in boxes and child != classifier:  # a classifier Sequential: its layers
                kids = items(child)                     # before the classifier itself
                tail = kids[: next((i for i, n in enumerate(kids) if holds(n, classifier)), 0)]
            break
        body.append((child, child in boxes))
    stage_boxes = [c for c, box in body if box]
    for child, box in body:
        inner = next((f"{child}.{k}" for k in _STAGE_CONTAINERS if f"{child}.{k}" in boxes),
                     None)
        if box and (child in _STAGE_CONTAINERS or len(stage_boxes) == 1):
            out += items(child)
        elif not box and inner is not None:
            out += items(inner)
        else:
            out.append(child)
    return out + tail


def zoo_layouts(layers: Sequence[str], *, channels_last: bool = False) -> dict[str, str]:
    """How each layer's output is pooled: ``"NLC"`` (a 3-d output is (B, T, C) tokens; 4-d
    maps stay channels-first) or, for a channels-last model, ``"NHWC"``.

    Parameters
    ----------
    layers : sequence of str
        The feature layers (not ``pre_logits`` / ``output``, which are (B, D)).
    channels_last : bool
        The model's blocks give (B, H, W, C) maps (timm ``output_fmt`` NHWC, torchvision Swin).

    Returns
    -------
    dict of str to str
    """
    return {layer: "NHWC" if channels_last else "NLC" for layer in layers}


# -- building the backends -----------------------------------------------------------------------
def _zoo_backend(name: str, model, pre: Preprocessing, *, feature_modules=(),
                 classifier: str | None, channels_last: bool, head: bool,
                 size: int | None = None) -> ImageModuleBackend:
    from torch import nn

    model = model.eval()
    names = [n for n, _ in model.named_modules() if n]
    containers = [n for n, m in model.named_modules()
                  if n and isinstance(m, (nn.Sequential, nn.ModuleList))]
    layers = choose_layers(names, feature_modules=feature_modules, containers=containers,
                           classifier=classifier)
    inputs_of = {PRE_LOGITS: classifier} if classifier is not None else {}
    blocks = [*layers, *inputs_of]
    if size is not None:
        pre = replace(pre, size=size)
    return ImageModuleBackend(name, model, block_names=blocks,
                              default=blocks[-1] if blocks else "output",
                              preprocessing=pre, head="output" if head else None,
                              layouts=zoo_layouts(layers, channels_last=channels_last),
                              inputs_of=inputs_of)


def _name_of(model, module) -> str | None:
    return next((n for n, m in model.named_modules() if n and m is module), None)


def timm_backend(name: str, model, *, size: int | None = None) -> ImageModuleBackend:
    """The backend of a built timm model (pretrained or not).

    Parameters
    ----------
    name : str
        The model name.
    model : torch.nn.Module
        A ``timm.create_model(...)`` model.
    size : int, optional
        Another input size than its data config's.

    Returns
    -------
    ImageModuleBackend
        Preprocessing from ``timm.data.resolve_model_data_config``, layers from
        ``feature_info`` (:func:`choose_layers`), ``pre_logits`` (the input of
        ``model.get_classifier()``, the default) and ``output`` (the head, when the model has
        >= 2 classes).
    """
    timm = _import("timm", "timm", "timm models", install=_install_timm())
    data = timm.data
    config = (data.resolve_model_data_config(model) if hasattr(data, "resolve_model_data_config")
              else data.resolve_data_config({}, model=model))
    pre = preprocessing_from_data_config(dict(config), name)
    clf = model.get_classifier() if hasattr(model, "get_classifier") else None
    clf = clf[0] if isinstance(clf, (tuple, list)) else clf
    info = getattr(model, "feature_info", None) or []
    modules = [d.get("module") for d in info if isinstance(d, dict) and d.get("module")]
    return _zoo_backend(name, model, pre, feature_modules=modules,
                        classifier=_name_of(model, clf) if clf is not None else None,
                        channels_last=str(getattr(model, "output_fmt", "NCHW")) == "NHWC",
                        head=int(getattr(model, "num_classes", 0) or 0) >= 2, size=size)


def _check_timm_name(timm, arg: str) -> None:
    """Refuse a name that is neither a hub id nor an architecture with pretrained weights."""
    if arg.startswith("hf-hub:"):
        repo = arg[len("hf-hub:"):]
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise InputError(f"Expected timm:hf-hub:<org>/<name> (e.g. "
                             f"timm:hf-hub:timm/resnet50.a1_in1k), got timm:{arg}")
        return
    if timm.is_model_pretrained(arg):
        return
    if timm.is_model(arg):
        raise InputError(f"Expected a timm model with pretrained weights, got {arg!r}, an "
                         "architecture without any; pick one of timm.list_models(pretrained="
                         "True)")
    names = [*timm.list_models(), *timm.list_models(pretrained=True)]
    raise InputError(f"Expected a timm model name, got {arg!r}{suggest(arg, names)}; see "
                     "timm.list_models(pretrained=True), or use timm:hf-hub:<org>/<name>")


@register_backend("timm")
def _timm(name):
    arg = name.arg
    timm = _import("timm", "timm", "timm models", install=_install_timm())
    _check_timm_name(timm, arg)
    try:
        model = timm.create_model(arg, pretrained=True)
    except Exception as exc:  # noqa: BLE001 - network or cache failures surface as many types
        raise InputError(
            f"Expected timm weights for {arg!r} in the Hugging Face cache, got "
            f"{type(exc).__name__}: {first_line(exc, 120)}; offline, only weights already in "
            "the cache load (run once with network access)"
        ) from None
    return timm_backend(f"timm:{arg}" + (f"@{name.size}" if name.size else ""), model,
                        size=name.size)


def transforms_fields(transforms) -> dict:
    """The fields of a torchvision ``ImageClassification`` transform as a plain dict (for
    :func:`preprocessing_from_transforms`)."""
    return {k: getattr(transforms, k) for k in ("crop_size", "resize_size", "mean", "std",
                                                 "interpolation")}


def torchvision_backend(name: str, model, transforms: dict, *,
                        size: int | None = None) -> ImageModuleBackend:
    """The backend of a built torchvision classification model (pretrained or not).

    Parameters
    ----------
    name : str
        The model name.
    model : torch.nn.Module
        A ``torchvision.models`` classifier.
    transforms : dict
        Its weights' evaluation transforms (:func:`transforms_fields`).
    size : int, optional
        Another input size than the transforms' crop.

    Returns
    -------
    ImageModuleBackend
        Layers of :func:`choose_layers` (stages or blocks), ``pre_logits`` (the input of the
        last ``Linear``, the default) and ``output`` (the class logits, the head).
    """
    from torch import nn

    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    named = dict(model.named_children())
    classifier = linears[-1] if linears else next(
        (c for c in ("classifier", "fc", "heads", "head") if c in named), None)
    return _zoo_backend(name, model, preprocessing_from_transforms(transforms, name),
                        classifier=classifier,
                        channels_last=type(model).__name__.startswith("SwinTransformer"),
                        head=True, size=size)


@register_backend("torchvision")
def _torchvision(name):
    arg = name.arg
    tv = _import("torchvision.models", "torchvision", "torchvision models",
                 install=_install_torchvision())
    arch, _, tag = arg.partition(".")
    known = tv.list_models(module=tv)
    if arch not in known:
        raise InputError(f"Expected a torchvision classification model name, got {arch!r}"
                         f"{suggest(arch, known)}; see torchvision.models.list_models()")
    enum = tv.get_model_weights(arch)
    tags = [w.name for w in enum]
    if tag and tag not in tags:
        raise InputError(f"Expected weights of {arch} among {', '.join(tags)}, got {tag!r}"
                         f"{suggest(tag, tags)}")
    weights = enum[tag] if tag else enum.DEFAULT
    try:
        model = tv.get_model(arch, weights=weights)
    except Exception as exc:  # noqa: BLE001 - network or cache failures surface as many types
        raise InputError(
            f"Expected torchvision weights for {arg!r} in the torch hub cache, got "
            f"{type(exc).__name__}: {first_line(exc, 120)}; offline, only weights already in "
            "the cache load (run once with network access)"
        ) from None
    return torchvision_backend(f"torchvision:{arg}" + (f"@{name.size}" if name.size else ""),
                               model, transforms_fields(weights.transforms()), size=name.size)
