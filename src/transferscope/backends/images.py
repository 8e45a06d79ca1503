"""Image preprocessing shared by image backends: to float, 3 channels, resize, crop, normalise.

:func:`to_tensor_batch` does what timm's and torchvision's evaluation transforms do: resize the
shorter side to ``size / crop_pct`` (aspect ratio kept, antialiased, the declared
interpolation), take the centre ``size`` x ``size`` crop, normalise with the mean and std.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from transferscope.backends.base import Preprocessing
from transferscope.backends.torch_module import TorchModuleBackend
from transferscope.errors import InputError
from transferscope.registry import suggest

#: Resize modes :func:`to_tensor_batch` takes (those of ``torch.nn.functional.interpolate``
#: that resize images; bilinear and bicubic are antialiased, as PIL and torchvision do).
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "nearest-exact", "area")
#: Tensor layouts a module can declare: images (``NCHW``, ``NHWC``, or ``ND`` flattened),
#: series (``NCL``), arrays (``ND``).
INPUT_LAYOUTS = ("NCHW", "NHWC", "NCL", "ND")
IMAGE_LAYOUTS = ("NCHW", "NHWC", "ND")


def check_preprocessing(pre: Preprocessing, where: str) -> Preprocessing:
    """``pre`` checked to be usable (one-line errors naming ``where``).

    Parameters
    ----------
    pre : Preprocessing
        A declaration (a model's own, or one with overrides applied).
    where : str
        Who declared it, for the message (e.g. ``"the preprocessing of model 'x'"``).

    Returns
    -------
    Preprocessing
        ``pre`` itself.

    Raises
    ------
    InputError
        For a size that is not a whole number >= 1, a mean or std that is not 3 finite numbers
        (std > 0), an unknown interpolation or layout.
    """
    size = pre.size
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer))
                             or size < 1):
        raise InputError(f"Expected an input size that is a whole number >= 1 in {where}, got "
                         f"{size!r}; declare e.g. 'size': 224")
    for field, values in (("mean", pre.mean), ("std", pre.std)):
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            raise InputError(f"Expected {field} to be 3 finite numbers (one per RGB channel, "
                             f"for pixels in [0, 1]) in {where}, got {list(values)}; declare "
                             f"e.g. '{field}': [0.485, 0.456, 0.406]")
    if not all(v > 0 for v in pre.std):
        raise InputError(f"Expected std > 0 for every channel in {where}, got {list(pre.std)}; "
                         "declare e.g. 'std': [0.229, 0.224, 0.225]")
    if pre.interpolation not in INTERPOLATIONS:
        raise InputError(f"Expected an interpolation among {', '.join(INTERPOLATIONS)} in "
                         f"{where}, got {pre.interpolation!r}"
                         f"{suggest(pre.interpolation, INTERPOLATIONS)}")
    if pre.layout not in INPUT_LAYOUTS:
        raise InputError(f"Expected a layout among {', '.join(INPUT_LAYOUTS)} in {where}, got "
                         f"{pre.layout!r}{suggest(pre.layout, INPUT_LAYOUTS)}")
    return pre


def resized_shape(height: int, width: int, size: int, crop_pct: float = 1.0) -> tuple[int, int]:
    """The (height, width) an image is resized to before its centre ``size`` crop.

    The shorter side becomes ``floor(size / crop_pct)`` and the longer one keeps the aspect
    ratio (truncated to a whole pixel), as ``torchvision.transforms.Resize(int)`` and timm's
    evaluation transform do.

    Parameters
    ----------
    height, width : int
        The image's size.
    size : int
        The crop size (the model's input size).
    crop_pct : float
        The crop's share of the resized shorter side.

    Returns
    -------
    tuple of int
    """
    short = math.floor(size / crop_pct + 1e-6)
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def _as_chw(img) -> torch.Tensor:
    """One image as a (3, H, W) float tensor in [0, 1] (grey repeated, alpha dropped)."""
    a = np.asarray(img)
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    t = torch.from_numpy(a)
    t = t[None].expand(3, -1, -1) if t.dim() == 2 else t.permute(2, 0, 1)[:3]
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t


def resize_crop(t: torch.Tensor, size: int, crop_pct: float = 1.0,
                interpolation: str = "bilinear") -> torch.Tensor:
    """(C, H, W) -> (C, size, size): shorter side resized (:func:`resized_shape`), centre crop.

    Parameters
    ----------
    t : torch.Tensor of shape (C, H, W)
        A float image.
    size : int
        Output size.
    crop_pct : float
        ``size`` over the resized shorter side (1.0: no margin is cropped from it).
    interpolation : str
        One of :data:`INTERPOLATIONS`; bilinear and bicubic are antialiased.

    Returns
    -------
    torch.Tensor of shape (C, size, size)
    """
    h, w = resized_shape(t.shape[-2], t.shape[-1], size, crop_pct)
    smooth = interpolation in ("bilinear", "bicubic")
    opts = {"align_corners": False, "antialias": True} if smooth else {}
    if (h, w) != tuple(t.shape[-2:]) or smooth:
        t = F.interpolate(t[None], size=(h, w), mode=interpolation, **opts)[0]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return t[:, top : top + size, left : left + size]


def to_tensor_batch(batch, pre: Preprocessing) -> torch.Tensor:
    """Images as a model's normalised input tensor.

    Parameters
    ----------
    batch : sequence of arrays (H, W) or (H, W, C)
        uint8 pixels, or floats in [0, 1]; grey images are repeated to 3 channels.
    pre : Preprocessing
        Size, crop, interpolation, mean and std. Each image's shorter side is resized to
        ``size / crop_pct`` (aspect kept; :func:`resize_crop`), then the centre ``size`` x
        ``size`` is taken: a square image with ``crop_pct`` 1 is resized straight to ``size``.
        Without a ``size`` the images are used at their own size (all must have the same).

    Returns
    -------
    torch.Tensor of shape (B, 3, size, size)

    Raises
    ------
    InputError
        For images of different sizes when no size is declared.
    """
    out = []
    for img in batch:
        t = _as_chw(img)
        if pre.size is not None:
            t = resize_crop(t, int(pre.size), pre.crop_pct, pre.interpolation)
        elif out and t.shape != out[0].shape:
            raise InputError(
                f"Expected images of one size when no input size is declared, got "
                f"{tuple(out[0].shape[1:])} and {tuple(t.shape[1:])} pixels; declare the size "
                "the model takes (--input-size, or 'size' in its preprocessing)"
            )
        out.append(t)
    x = torch.stack(out)
    mean = torch.tensor(pre.mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def images_in_layout(batch, pre: Preprocessing, where: str = "the model") -> torch.Tensor:
    """:func:`to_tensor_batch` in the layout ``pre`` declares.

    Parameters
    ----------
    batch : sequence of arrays (H, W) or (H, W, C)
        The images.
    pre : Preprocessing
        With ``layout`` ``"NCHW"`` (B, 3, S, S), ``"NHWC"`` (B, S, S, 3) or ``"ND"``
        (B, 3 * S * S, flattened from NCHW).
    where : str
        The model, for the message.

    Returns
    -------
    torch.Tensor

    Raises
    ------
    InputError
        For a layout that does not hold images (``"NCL"``).
    """
    if pre.layout not in IMAGE_LAYOUTS:
        raise InputError(f"Expected an image layout ({', '.join(IMAGE_LAYOUTS)}) in the "
                         f"preprocessing of {where} for image data, got {pre.layout!r}; declare "
                         "'layout': 'NCHW' (or use series data with this model)")
    x = to_tensor_batch(batch, pre)
    if pre.layout == "NHWC":
        return x.permute(0, 2, 3, 1).contiguous()
    if pre.layout == "ND":
        return x.flatten(1)
    return x


class ImageModuleBackend(TorchModuleBackend):
    """A vision module whose inputs are prepared by :func:`to_tensor_batch`.

    Parameters
    ----------
    name, module, block_names, default
        As for :class:`TorchModuleBackend`.
    preprocessing : Preprocessing
        With a ``size``.
    head, layouts, inputs_of
        As for :class:`TorchModuleBackend` (the source classifier's layer; token or
        channels-last layers; layers read at a submodule's input).
    """

    modalities = ("image",)

    def __init__(self, name, module, *, block_names, default, preprocessing: Preprocessing,
                 head: str | None = None, layouts: dict | None = None,
                 inputs_of: dict | None = None):
        if preprocessing.size is None:
            raise InputError(f"Expected an input size for image model {name!r}, got none")
        check_preprocessing(preprocessing, f"the preprocessing of model {name!r}")
        super().__init__(name, module, block_names=block_names, default=default,
                         preprocessing=preprocessing, head=head, layouts=layouts,
                         inputs_of=inputs_of)

    def with_preprocessing(self, **changes):
        """As :meth:`FinetunableBackend.with_preprocessing`, checked (:func:`check_preprocessing`;
        an image model keeps an input size)."""
        out = super().with_preprocessing(**changes)
        where = f"the preprocessing of model {self.name!r}"
        if out.preprocessing.size is None:
            raise InputError(f"Expected an input size for image model {self.name!r} in {where}, "
                             "got none; give one (--input-size)")
        check_preprocessing(out.preprocessing, where)
        return out

    def prepare(self, batch, data):
        """(B, 3, size, size) normalised pixels (in the declared layout)."""
        return images_in_layout(batch, self.preprocessing, repr(self.name))
