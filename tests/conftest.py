import os

import numpy as np
import pytest
from hypothesis import settings

from tests.s1_inputs import make_s1

# The tests never reach the network: Hugging Face libraries load from local folders and caches
# only (a hub id that is not cached is an error, which the hostile suite checks).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Progress bars and lines are off in the tests (their CLI tests read stderr line by line, also
# of `tscope` subprocesses); tests/test_progress.py turns them on where it checks them.
os.environ.setdefault("TSCOPE_PROGRESS", "0")

# CI draws the same hypothesis examples every run (no flaky red builds); locally they vary
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def s1():
    """The reference input S1 (N=2000, D=512, C=10, Cs=1000), rebuilt and hash-checked."""
    return make_s1()


def blobs(n=150, d=8, c=3, sep=3.0, seed=0):
    """Gaussian class blobs; larger ``sep`` = more separable classes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    means = rng.standard_normal((c, d))
    means *= sep / np.linalg.norm(means, axis=1, keepdims=True)
    x = means[y] + rng.standard_normal((n, d)) + 5.0  # offset: features are rarely centred
    return x, y


def probs_for(y, c_source=6, strength=3.0, seed=0):
    """Source-class probabilities that carry ``strength`` of information about ``y``."""
    rng = np.random.default_rng(seed)
    mapping = rng.standard_normal((y.max() + 1, c_source))
    logits = strength * mapping[y] + rng.standard_normal((len(y), c_source))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)
