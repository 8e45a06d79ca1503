"""Image preprocessing shared by image backends: to float, 3 channels, resize, normalise."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from transferscope.backends.torch_module import TorchModuleBackend


def to_tensor_batch(batch, size: int, mean, std) -> torch.Tensor:
    """uint8 (or [0, 1] float) images (H, W) or (H, W, C) -> normalised (B, 3, size, size)."""
    out = []
    for img in batch:
        a = np.asarray(img)
        a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
        t = torch.from_numpy(a)
        t = t[None].expand(3, -1, -1) if t.dim() == 2 else t.permute(2, 0, 1)[:3]
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        out.append(F.interpolate(t[None], size=(size, size), mode="bilinear",
                                 align_corners=False, antialias=True)[0])
    x = torch.stack(out)
    mean = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


class ImageModuleBackend(TorchModuleBackend):
    """A vision module with square-resize + mean/std preprocessing."""

    modalities = ("image",)

    def __init__(self, name, module, *, block_names, default, size, mean, std):
        self.size, self.mean, self.std = int(size), tuple(mean), tuple(std)
        super().__init__(name, module, block_names=block_names, default=default,
                         preprocessing={"size": self.size, "mean": self.mean, "std": self.std,
                                        "resize": "bilinear-antialias"})

    def prepare(self, batch, data):
        return to_tensor_batch(batch, self.size, self.mean, self.std)
