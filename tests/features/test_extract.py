import numpy as np
import pytest

from transferscope.backends import create_backend
from transferscope.data import Dataset
from transferscope.features import FeatureCache, extract_features


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return Dataset("d", "array", rng.standard_normal((12, 5)).astype(np.float32),
                   np.arange(12) % 3)


def counting(backend):
    calls = []
    original = backend.features

    def wrapped(*a, **k):
        calls.append(k)
        return original(*a, **k)

    backend.features = wrapped
    return calls


def test_second_run_does_no_forward_pass(tmp_path, data):
    cache = FeatureCache(tmp_path)
    b = create_backend("raw")
    calls = counting(b)
    first = extract_features(b, data, cache=cache)
    second = extract_features(b, data, cache=cache)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["input"], second["input"])
    other = Dataset("d", "array", data.inputs + 1, data.labels)  # new content, new key
    extract_features(b, other, cache=cache)
    assert len(calls) == 2


def test_corrupt_entry_is_recomputed_with_a_warning(tmp_path, data):
    cache = FeatureCache(tmp_path)
    b = create_backend("raw")
    extract_features(b, data, cache=cache)
    npy = next(tmp_path.glob("*.npy"))
    npy.write_bytes(npy.read_bytes()[:-8])  # truncated
    calls = counting(b)
    with pytest.warns(UserWarning, match="corrupt"):
        again = extract_features(b, data, cache=cache)
    assert len(calls) == 1 and again["input"].shape == (12, 5)
    assert cache.get(next(iter(p.stem for p in tmp_path.glob("*.json")))) is not None


def test_no_temporary_files_left(tmp_path, data):
    extract_features(create_backend("raw"), data, cache=FeatureCache(tmp_path))
    assert not list(tmp_path.glob("*.tmp"))
    assert len(list(tmp_path.glob("*.npy"))) == len(list(tmp_path.glob("*.json"))) == 1
