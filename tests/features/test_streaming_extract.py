"""Extraction through the DataLoader writes the cache as it goes, matches the in-memory path,
never leaves a half entry, and honours --precision."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from transferscope import InputError
from transferscope.backends.base import Preprocessing
from transferscope.backends.simple import UserModuleBackend
from transferscope.data.loaders import load_image_folder
from transferscope.data.stream import open_image_folder
from transferscope.features import FeatureCache, extract_features
from transferscope.features.cache import cache_key


def image_backend(name="tiny-img"):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    pre = Preprocessing(size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return UserModuleBackend(name, net, preprocessing=pre)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(7):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")
    return root


def test_streamed_features_equal_the_in_memory_pass(tmp_path, folder):
    b = image_backend()
    eager = load_image_folder(folder)
    want = b.features(eager, ["2", "5"], batch_size=4, device="cpu")
    lazy = open_image_folder(folder)
    for workers in (0, 2):
        got = extract_features(b, lazy, ["2", "5"], cache=FeatureCache(tmp_path / f"c{workers}"),
                               batch_size=4, device="cpu", num_workers=workers)
        for layer in ("2", "5"):
            np.testing.assert_array_equal(got[layer], want[layer])


def test_features_go_to_the_cache_under_the_same_key_and_are_reused(tmp_path, folder):
    b, data = image_backend(), open_image_folder(folder)
    cache = FeatureCache(tmp_path / "c")
    first = extract_features(b, data, ["5"], cache=cache, batch_size=5, mmap=True)["5"]
    assert isinstance(first, np.memmap) and first.shape == (21, 16)
    key = cache_key(b.identity(), "5", load_image_folder(folder).fingerprint)  # fp32: no tag
    assert (tmp_path / "c" / f"{key}.npy").is_file()
    assert (tmp_path / "c" / f"{key}.json").is_file()
    assert not list((tmp_path / "c").glob("*.tmp"))
    calls = []
    b.iter_features = lambda *a, **k: calls.append(1)  # a hit runs nothing
    again = extract_features(b, data, ["5"], cache=cache)["5"]
    assert not calls
    np.testing.assert_array_equal(again, first)


def test_an_interrupted_extraction_leaves_no_entry(tmp_path, folder):
    b, data = image_backend(), open_image_folder(folder)
    cache = FeatureCache(tmp_path / "c")
    original = b.iter_features

    def dies(*a, **k):
        for i, chunk in enumerate(original(*a, **k)):
            if i == 2:
                raise KeyboardInterrupt
            yield chunk

    b.iter_features = dies
    with pytest.raises(KeyboardInterrupt):
        extract_features(b, data, ["5"], cache=cache, batch_size=4)
    assert not list((tmp_path / "c").iterdir())  # no .npy, no .json, no .tmp
    del b.iter_features
    full = extract_features(b, data, ["5"], cache=cache, batch_size=4)["5"]
    assert full.shape == (21, 16) and len(list((tmp_path / "c").glob("*.npy"))) == 1


def test_nan_features_are_counted_over_every_batch(tmp_path, folder):
    b, data = image_backend(), open_image_folder(folder)
    with torch.no_grad():
        b.module[0].bias[0] = float("nan")
    with pytest.raises(InputError, match=r"got NaN or inf for 21 of 21 samples"):
        extract_features(b, data, ["5"], cache=FeatureCache(tmp_path / "c"), batch_size=4)
    assert not list((tmp_path / "c").glob("*"))


def test_bf16_on_the_cpu_is_close_to_fp32_and_cached_apart(tmp_path, folder):
    b, data = image_backend(), open_image_folder(folder)
    cache = FeatureCache(tmp_path / "c")
    fp32 = extract_features(b, data, ["5"], cache=cache, precision="fp32")["5"]
    bf16 = extract_features(b, data, ["5"], cache=cache, precision="bf16")["5"]
    assert len(list((tmp_path / "c").glob("*.npy"))) == 2  # a key per precision
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)
    # bf16 keeps 8 bits of mantissa: relative error ~ 2**-8 per op; 3 % of the scale here
    np.testing.assert_allclose(bf16, fp32, atol=0.03 * np.abs(fp32).max())
    auto = extract_features(b, data, ["5"], cache=cache, precision="auto", device="cpu")["5"]
    np.testing.assert_array_equal(auto, fp32)  # auto is fp32 on the CPU


@pytest.mark.parametrize("precision,match", [
    ("fp16", r"Expected --precision fp16 only on a CUDA device, got device 'cpu'"),
    ("half", r"Expected precision among auto, fp32, bf16, fp16, got 'half'"),
])
def test_bad_precision_is_one_line(tmp_path, folder, precision, match):
    with pytest.raises(InputError, match=match) as err:
        extract_features(image_backend(), open_image_folder(folder), cache=FeatureCache(tmp_path),
                         device="cpu", precision=precision)
    assert "\n" not in str(err.value)
