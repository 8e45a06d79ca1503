"""benchmarks/demo_check.py: the demo's own text target, split for a fine-tuning check."""

import csv

import numpy as np
import pytest

from tests.benchmarks import bench_module


def _rows(path):
    with path.open(encoding="utf-8", newline="") as f:
        return [(r["text"], r["label"]) for r in csv.DictReader(f)]


def test_the_split_is_the_demos_subsample_and_a_disjoint_test_set(tmp_path):
    pytest.importorskip("fortune")
    from transferscope.data import load_dataset, subsample

    check = bench_module("demo_check")
    train, test = check.write_split(tmp_path)
    demo = subsample(load_dataset(check.DATASET), per_class=check.PER_CLASS, seed=check.SEED)
    assert _rows(train) == list(zip(map(str, demo.inputs),
                                    [str(v) for v in np.asarray(demo.labels)], strict=True))
    rows = _rows(test)
    labels = [v for _, v in rows]
    assert set(labels) == {str(v) for v in np.asarray(demo.labels)}
    assert max(labels.count(c) for c in set(labels)) == check.TEST_PER_CLASS
    assert not {t for t, _ in rows} & set(map(str, demo.inputs))
    again = tmp_path / "again"
    again.mkdir()
    assert [p.read_bytes() for p in check.write_split(again)] == \
        [train.read_bytes(), test.read_bytes()]
