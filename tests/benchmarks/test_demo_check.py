"""benchmarks/demo_check.py: the demo's own targets, split for a fine-tuning check."""

import csv

import numpy as np
import pytest

from tests.benchmarks import bench_module


def _rows(path):
    with path.open(encoding="utf-8", newline="") as f:
        return [(r["text"], r["label"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("case", ["text", "images"])
def test_the_split_is_the_demos_subsample_and_a_disjoint_test_set(case, tmp_path):
    pytest.importorskip("fortune" if case == "text" else "sklearn")
    from transferscope.data import load_dataset, subsample

    check = bench_module("demo_check")
    dataset, per_class = check.demo_case(case)
    demo = subsample(load_dataset(dataset), per_class=per_class, seed=check.SEED)
    train, test = check.write_split(tmp_path, case)
    if case == "text":
        assert _rows(train) == list(zip(map(str, demo.inputs),
                                        [str(v) for v in np.asarray(demo.labels)], strict=True))
        rows = _rows(test)
        texts, labels = [t for t, _ in rows], [v for _, v in rows]
        assert not set(texts) & set(map(str, demo.inputs))
    else:
        got, held = np.load(train), np.load(test)
        np.testing.assert_array_equal(got["X"][:, 0], np.asarray(demo.inputs))  # (n, 1, H, W)
        assert load_dataset(str(train)).kind == "image"
        np.testing.assert_array_equal(got["y"], np.asarray(demo.labels))
        labels = list(held["y"])
        # scikit-learn's 1,797 digits are 1,797 distinct images
        assert not {x.tobytes() for x in held["X"]} & {x.tobytes() for x in got["X"]}
    assert set(map(str, labels)) == {str(v) for v in np.asarray(demo.labels)}
    assert max(labels.count(c) for c in set(labels)) == check.TEST_PER_CLASS
    again = tmp_path / "again"
    again.mkdir()
    assert [p.read_bytes() for p in check.write_split(again, case)] == \
        [train.read_bytes(), test.read_bytes()]


def test_an_unknown_case_is_refused():
    with pytest.raises(SystemExit, match="expected a demo case among images, text"):
        bench_module("demo_check").demo_case("audio")
