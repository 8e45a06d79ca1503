"""FCN for time-series classification (Wang, Yan, Oates 2017; the transfer study of
Fawaz et al. 2018): three convolution blocks and global average pooling, so one network takes
series of any length and any dataset can be its source."""

import torch
from torch import nn


def block(c_in, c_out, k):
    return nn.Sequential(nn.Conv1d(c_in, c_out, k, padding=k // 2), nn.BatchNorm1d(c_out),
                         nn.ReLU())


def fcn():
    """The feature extractor; transferscope adds the classification head for each task."""
    torch.manual_seed(0)
    return nn.Sequential(block(1, 128, 7), block(128, 256, 5), block(256, 128, 3),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten())
