"""Lazily decoded image folders, memmaps and DataLoader batches give what the eager path does."""

import numpy as np
import pytest
import torch
from PIL import Image

from transferscope import InputError
from transferscope.data import Dataset, subsample
from transferscope.data.loaders import load_image_folder
from transferscope.data.stream import batches, check_workers, open_image_folder


def write_folder(root, sizes=((12, 10),), grey=False, n=4, fmt="png"):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            h, w = sizes[i % len(sizes)]
            a = rng.integers(0, 256, (h, w) if grey else (h, w, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / c / f"{i}.{fmt}")
    return root


@pytest.mark.parametrize("sizes,grey", [(((12, 10),), False), (((12, 10),), True),
                                        (((12, 10), (9, 14)), False)])
def test_lazy_folder_matches_the_eager_loader(tmp_path, sizes, grey):
    root = write_folder(tmp_path / "imgs", sizes, grey)
    eager, lazy = load_image_folder(root), open_image_folder(root)
    assert list(lazy.labels) == list(eager.labels) and len(lazy) == len(eager) == 8
    for i in range(len(eager)):
        np.testing.assert_array_equal(lazy.inputs[i], eager.inputs[i])
    assert lazy.fingerprint == eager.fingerprint
    a, b = subsample(eager, per_class=3, seed=1), subsample(lazy, per_class=3, seed=1)
    assert type(b.inputs).__name__ == "LazyImages"  # a subset stays lazy
    assert a.fingerprint == b.fingerprint


def test_lazy_folder_names_corrupt_files_like_the_eager_loader(tmp_path):
    root = write_folder(tmp_path / "imgs")
    (root / "cat" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError) as eager:
        load_image_folder(root)
    with pytest.raises(InputError) as lazy:
        open_image_folder(root)
    assert str(lazy.value) == str(eager.value) and "\n" not in str(lazy.value)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert len(open_image_folder(root, skip_corrupt=True)) == 8


def test_lazy_folder_refuses_a_folder_without_classes(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(InputError, match="Expected class sub-folders"):
        open_image_folder(tmp_path)


def test_memmap_inputs_fingerprint_like_the_array(tmp_path):
    x = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    y = np.arange(50) % 2
    assert Dataset("a", "array", mm, y).fingerprint == Dataset("a", "array", x, y).fingerprint


def prepare(batch, data):
    return torch.as_tensor(np.asarray(batch, dtype=np.float32)) * 2


def test_loader_batches_equal_prepare_of_each_batch_with_and_without_workers():
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    data = Dataset("a", "array", x, np.arange(20) % 2)
    order = [np.array([3, 1, 2]), np.array([19, 0]), np.array([7])]
    for workers in (0, 2):
        got = list(batches(data, prepare, order, targets=data.labels, num_workers=workers))
        assert len(got) == 3
        for idx, (xb, yb) in zip(order, got, strict=True):
            torch.testing.assert_close(xb, prepare(x[idx], data), rtol=0, atol=0)
            assert yb.tolist() == list(data.labels[idx])


def refuse(batch, data):
    if any(float(np.asarray(b).sum()) > 100 for b in batch):
        raise InputError("Expected small inputs, got a large one; scale them")
    return prepare(batch, data)


def test_a_refusal_in_a_worker_is_one_line_in_the_caller():
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    data = Dataset("a", "array", x, np.arange(20) % 2)
    with pytest.raises(InputError) as err:
        list(batches(data, refuse, [np.arange(0, 5), np.arange(15, 20)], num_workers=2))
    assert str(err.value) == "Expected small inputs, got a large one; scale them"


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_num_workers_must_be_a_whole_number(bad):
    with pytest.raises(InputError, match=r"Expected num_workers >= 0 .*--num-workers 2"):
        check_workers(bad)
