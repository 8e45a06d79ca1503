import numpy as np
import pytest

from transferscope import InputError
from transferscope.io import load_features


def test_npz_default_and_custom_keys(tmp_path):
    x, y = np.ones((4, 3)), np.array([0, 1, 0, 1])
    np.savez(tmp_path / "a.npz", X=x, y=y)
    f, lab, p = load_features(tmp_path / "a.npz")
    assert f.shape == (4, 3) and lab.tolist() == y.tolist() and p is None
    np.savez(tmp_path / "b.npz", emb=x, target=y)
    f, lab, _ = load_features(tmp_path / "b.npz", features_key="emb", labels_key="target")
    assert f.shape == (4, 3) and lab.tolist() == y.tolist()
    with pytest.raises(InputError, match="got only"):
        load_features(tmp_path / "b.npz", labels_key="nope", features_key="emb")
    with pytest.raises(InputError, match="got keys"):
        load_features(tmp_path / "b.npz")


def test_unsupported_suffix_and_missing_file(tmp_path):
    (tmp_path / "f.txt").write_text("1 2 3")
    with pytest.raises(InputError, match="ending in"):
        load_features(tmp_path / "f.txt")
    with pytest.raises(InputError, match="does not exist"):
        load_features(tmp_path / "none.npz")


def test_text_labels_file(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    (tmp_path / "labels.txt").write_text("cat\ndog\ncat\n")
    _, lab, _ = load_features(tmp_path / "x.npy", labels_path=tmp_path / "labels.txt")
    assert lab.tolist() == ["cat", "dog", "cat"]


def test_csv_probability_columns(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,label,probs0,probs1\n1,2,x,0.5,0.5\n3,4,y,0.2,0.8\n")
    f, lab, p = load_features(tmp_path / "t.csv")
    assert f.tolist() == [[1, 2], [3, 4]]
    assert lab.tolist() == ["x", "y"]
    assert p.tolist() == [[0.5, 0.5], [0.2, 0.8]]
    with pytest.raises(InputError, match="label column 'target'"):
        load_features(tmp_path / "t.csv", labels_key="target")
