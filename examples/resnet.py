"""A small ResNet for 32 x 32 images (He et al. 2016, the CIFAR variant: three stages of basic
blocks), as a user would write it: ``tscope rank --model torch:examples/resnet.py:resnet@ckpt``.

The factory declares the preprocessing the weights were trained with (input size, per-channel
mean and std of pixels in [0, 1]), so images reach the network as normalised NCHW tensors the
way they did in training; ``--input-size``, ``--mean`` and ``--std`` override the declaration.
"""

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3 x 3 convolutions with a residual connection (a 1 x 1 projection when the shape
    changes)."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem, three stages (``layer1`` .. ``layer3``), global average pooling and a classifier
    ``fc`` (the source head: its logits are what LEEP and NCE read)."""

    def __init__(self, width=16, blocks=(1, 1, 1), num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        stages, c = [], width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            stages.append(nn.Sequential(*[BasicBlock(c if j == 0 else c_out, c_out,
                                                     2 if (i > 0 and j == 0) else 1)
                                          for j in range(n)]))
            c = c_out
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x))


MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def resnet():
    """The network and the preprocessing its weights were trained with."""
    torch.manual_seed(0)
    return ResNet(), {"size": 32, "mean": MEAN, "std": STD}
