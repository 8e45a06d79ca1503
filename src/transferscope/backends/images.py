"""Image preprocessing shared by image backends: to float, 3 channels, resize, normalise."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from transferscope.backends.base import Preprocessing
from transferscope.backends.torch_module import TorchModuleBackend
from transferscope.errors import InputError


def to_tensor_batch(batch, pre: Preprocessing) -> torch.Tensor:
    """Images as a model's normalised input tensor.

    Parameters
    ----------
    batch : sequence of arrays (H, W) or (H, W, C)
        uint8 pixels, or floats in [0, 1]; grey images are repeated to 3 channels.
    pre : Preprocessing
        Size, crop, interpolation, mean and std.

    Returns
    -------
    torch.Tensor of shape (B, 3, size, size)
    """
    size = int(pre.size)
    resize = size if pre.crop_pct == 1 else int(round(size / pre.crop_pct))
    out = []
    for img in batch:
        a = np.asarray(img)
        a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
        t = torch.from_numpy(a)
        t = t[None].expand(3, -1, -1) if t.dim() == 2 else t.permute(2, 0, 1)[:3]
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        t = F.interpolate(t[None], size=(resize, resize), mode=pre.interpolation,
                          align_corners=False, antialias=True)[0]
        if resize != size:  # centre crop
            top = (resize - size) // 2
            t = t[:, top : top + size, top : top + size]
        out.append(t)
    x = torch.stack(out)
    mean = torch.tensor(pre.mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


class ImageModuleBackend(TorchModuleBackend):
    """A vision module whose inputs are prepared by :func:`to_tensor_batch`.

    Parameters
    ----------
    name, module, block_names, default
        As for :class:`TorchModuleBackend`.
    preprocessing : Preprocessing
        With a ``size``.
    """

    modalities = ("image",)

    def __init__(self, name, module, *, block_names, default, preprocessing: Preprocessing):
        if preprocessing.size is None:
            raise InputError(f"Expected an input size for image model {name!r}, got none")
        super().__init__(name, module, block_names=block_names, default=default,
                         preprocessing=preprocessing)

    def prepare(self, batch, data):
        """(B, 3, size, size) normalised pixels."""
        return to_tensor_batch(batch, self.preprocessing)
