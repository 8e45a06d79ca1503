import numpy as np
import pytest

from tests.conftest import blobs
from transferscope import InputError
from transferscope.metrics import StreamingScorer, score, streaming_score


@pytest.mark.parametrize("rows", [7, 64, 1000])
def test_streaming_equals_in_memory(rows):
    x, y = blobs(400, 12, 4, 2.0, 0)
    x = x + 1e3  # a large offset: the shifted accumulation must not cancel
    got = streaming_score(x, y, rows_per_chunk=rows)
    for name, value in got.items():
        assert value == pytest.approx(score(name, x, y), rel=1e-8), name


def test_streaming_from_memmap(tmp_path):
    x, y = blobs(300, 10, 3, 2.0, 1)
    path = tmp_path / "f.npy"
    np.save(path, x.astype(np.float32))
    mm = np.load(path, mmap_mode="r")
    seen = []
    got = streaming_score(mm, y, rows_per_chunk=50, progress=lambda d, t: seen.append(d))
    assert seen[-1] == 300 and len(seen) == 6
    assert got["logme"] == pytest.approx(score("logme", x.astype(np.float32), y), rel=1e-8)


def test_scorer_chunks_with_string_labels():
    x, y = blobs(200, 5, 3, 2.0, 2)
    names = np.array(["a", "b", "c"])[y]
    scorer = StreamingScorer(5, classes=["a", "b", "c"], metrics=["hscore"])
    for i in range(0, 200, 33):
        scorer.update(x[i : i + 33], names[i : i + 33])
    assert scorer.scores()["hscore"] == pytest.approx(score("hscore", x, y), rel=1e-9)


def test_streaming_errors():
    x, y = blobs(60, 4, 2, 2.0, 0)
    with pytest.raises(InputError, match="did you mean 'logme'"):
        StreamingScorer(4, [0, 1], metrics=["logm"])
    scorer = StreamingScorer(4, [0, 1, 2])
    with pytest.raises(InputError, match="declared classes"):
        scorer.update(x, y + 5)
    with pytest.raises(InputError, match="4 features"):
        scorer.update(x[:, :3], y)
    scorer.update(x, y)
    with pytest.raises(InputError, match="none of"):
        scorer.scores()
