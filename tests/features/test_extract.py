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


NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x)).mean(2)


def build():
    torch.manual_seed(0)
    return Net()
"""


@pytest.fixture
def series():
    rng = np.random.default_rng(0)
    return Dataset("s", "series", rng.standard_normal((12, 1, 10)).astype(np.float32),
                   np.arange(12) % 3)


@pytest.mark.parametrize("old, new", [
    ("nn.ReLU()", "nn.GELU()"),  # the structure (repr of the module) changes
    ("return self.act(self.conv(x)).mean(2)", "return self.act(-self.conv(x)).mean(2)"),
])
def test_edited_model_code_is_not_served_stale_features(tmp_path, series, old, new):
    cache = FeatureCache(tmp_path / "c")
    (tmp_path / "net.py").write_text(NET)
    name = f"torch:{tmp_path / 'net.py'}:build"
    before = extract_features(name, series, ["output"], cache=cache)["output"]
    (tmp_path / "net.py").write_text(NET.replace(old, new))
    edited = create_backend(name)
    after = extract_features(edited, series, ["output"], cache=cache)["output"]
    fresh = edited.features(series, ["output"])["output"]  # no cache at all
    assert not np.allclose(before, after)
    np.testing.assert_array_equal(after, fresh)
    (tmp_path / "net.py").write_text(NET)  # the old code again: its entry is still good
    again = extract_features(name, series, ["output"], cache=cache)["output"]
    np.testing.assert_array_equal(again, before)


@pytest.mark.parametrize("sidecar", ["[1, 2]", "3", "null", '"text"', "{not json", "",
                                     '{"sha256": 5, "shape": "x"}', '{"shape": [12, 5]}'])
def test_sidecar_that_is_not_a_record_is_a_miss(tmp_path, data, sidecar):
    cache = FeatureCache(tmp_path)
    b = create_backend("raw")
    first = extract_features(b, data, cache=cache)["input"]
    meta = next(tmp_path.glob("*.json"))
    meta.write_text(sidecar)
    calls = counting(b)
    with pytest.warns(UserWarning, match="corrupt"):
        assert cache.get(meta.stem) is None
    with pytest.warns(UserWarning, match="corrupt"):
        again = extract_features(b, data, cache=cache)["input"]
    assert len(calls) == 1
    np.testing.assert_array_equal(again, first)
    assert cache.get(meta.stem) is not None  # rewritten


@pytest.mark.parametrize("corrupt", ["bytes", "pickle", "npz", "other"])
def test_corrupt_npy_is_a_miss(tmp_path, data, corrupt):
    import io

    cache = FeatureCache(tmp_path)
    b = create_backend("raw")
    first = extract_features(b, data, cache=cache)["input"]
    npy = next(tmp_path.glob("*.npy"))
    if corrupt == "bytes":
        npy.write_bytes(np.random.default_rng(0).bytes(64))
    elif corrupt == "pickle":
        np.save(npy, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif corrupt == "npz":
        buf = io.BytesIO()
        np.savez(buf, x=np.zeros(3))
        npy.write_bytes(buf.getvalue())
    else:
        np.save(npy, np.zeros_like(first))
    with pytest.warns(UserWarning, match="corrupt"):
        again = extract_features(b, data, cache=cache)["input"]
    np.testing.assert_array_equal(again, first)


def test_unwritable_cache_warns_and_still_returns_features(tmp_path, data):
    (tmp_path / "c").write_text("a file, not a folder")
    with pytest.warns(UserWarning, match="not writable"):
        out = extract_features(create_backend("raw"), data, cache=FeatureCache(tmp_path / "c"))
    assert out["input"].shape == (12, 5)


def test_non_finite_features_are_refused(tmp_path, series):
    from transferscope import InputError

    (tmp_path / "net.py").write_text(NET.replace("return self.act(self.conv(x)).mean(2)",
                                                 "return torch.log(self.conv(x)).mean(2)"))
    with pytest.raises(InputError, match="Expected finite features"):
        extract_features(f"torch:{tmp_path / 'net.py'}:build", series, ["output"],
                         cache=FeatureCache(tmp_path / "c"))
    assert not list((tmp_path / "c").glob("*.npy"))  # nothing wrong was cached
