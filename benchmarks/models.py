"""Models the benchmark pretrains that the examples do not have."""

import torch
from torch import nn


def lenet_wide(n_classes: int = 10, width: int = 1024) -> nn.Module:
    """LeNet-5 as in ``examples/lenet.py`` but with a ``width``-wide penultimate layer (84 in
    LeNet-5): the benchmark's wide source, for the test of whether transferability scores
    reward feature width. Blocks: 0-2 conv, 3-5 conv, 6 flatten, 7-8 fc 120, 9-10 fc
    ``width``, 11 the classifier (layer "10" is what a new head sits on); (N, 3, 28, 28) in."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, width), nn.ReLU(),
        nn.Linear(width, n_classes))
    net.preprocessing = {"size": 28, "mean": [0.1307] * 3, "std": [0.3081] * 3}
    return net
