"""LeNet-5 (LeCun et al. 1998) for 28 x 28 grey images: the architecture of the shipped demo
sources (see :mod:`transferscope.zoo`). Blocks: 0-2 conv, 3-5 conv, 6 flatten, 7-8 fc 120,
9-10 fc 84, 11 the classifier (layer "10" is what a new head sits on)."""

import torch
from torch import nn


def lenet(n_classes: int = 10) -> nn.Module:
    """LeNet-5 with ReLU and max pooling; (N, 3, 28, 28) in (grey images reach it as RGB),
    (N, n_classes) out; pixels in [0, 1] normalised with MNIST's mean and std (its
    ``preprocessing``)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, n_classes))
    net.preprocessing = {"size": 28, "mean": [0.1307] * 3, "std": [0.3081] * 3}
    return net
