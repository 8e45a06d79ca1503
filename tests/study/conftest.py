import numpy as np
import pytest

NET = '''
import torch
from torch import nn

def fcn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Conv1d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                         nn.Flatten())
'''

# one target, one source, two seeds: the smallest study whose runs finetune can reuse
PAIR_SPEC = '''
name = "pair"
targets = ["{d}/a.npz"]
sources = ["torch:{d}/net.py:fcn"]
strategies = ["full"]
fractions = [1.0]
seeds = 2
metrics = ["logme"]
db = "sqlite:///{d}/study.db"
splits = 1  # one split: cross-validation has its own test

[train]
epochs = 2
batch_size = 16
min_steps = 0  # the budget floor and learning-rate search have their own tests
lr_grid = [1.0]

[budgets]
subsamples = 2
'''


SPEC = '''
name = "tiny"
targets = ["{d}/a.npz", "{d}/b.npz"]
sources = ["pretrained:net-c", "torch:{d}/net.py:fcn"]
strategies = ["full"]
fractions = [0.5, 1.0]
seeds = 2
metrics = ["logme", "hscore_reg"]
db = "sqlite:///{d}/study.db"
splits = 1  # one split: cross-validation has its own test

[train]
epochs = 2
batch_size = 16
min_steps = 0  # the budget floor and learning-rate search have their own tests
lr_grid = [1.0]

[budgets]
subsamples = 2

[[pretrain]]
name = "net-c"
model = "torch:{d}/net.py:fcn"
data = "{d}/c.npz"
epochs = 3
'''


def write_study(d, spec=SPEC):
    (d / "net.py").write_text(NET)
    for name, f0, seed in (("a", 1, 0), ("b", 2, 1), ("c", 3, 2)):
        rng = np.random.default_rng(seed)
        y = np.arange(60) % 3
        t = np.linspace(0, 1, 32)
        x = np.sin(2 * np.pi * (y[:, None] * f0 + 1) * t) + 0.8 * rng.standard_normal((60, 32))
        np.savez(d / f"{name}.npz", X=x[:, None, :].astype(np.float32), y=y)
    path = d / "study.toml"
    path.write_text(spec.format(d=d))
    return path


@pytest.fixture
def study_dir(tmp_path):
    return write_study(tmp_path)
