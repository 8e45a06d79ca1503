"""The WordLlama backend: the shipped static embeddings, read as WordLlama reads them."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch

from transferscope import InputError, OptionalDependencyError
from transferscope.backends import create_backend
from transferscope.data import Dataset

pytestmark = pytest.mark.skipif(importlib.util.find_spec("wordllama") is None,
                                reason="wordllama is not installed")

TEXTS = ["The quick brown fox jumps over the lazy dog.", "", "Ünïcode, emoji 🙂 and tabs\t!",
         "a " * 40, "It's a test"]


def _data():
    return Dataset("t", "text", TEXTS, np.arange(len(TEXTS)) % 2)


def _reference(texts, limit=None):
    """WordLlama's embed(norm=False), written out from its files: mean of the token rows."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    from transferscope.backends.wordllama import package_dir

    table = load_file(str(package_dir() / "weights" / "l2_supercat_256.safetensors"))
    table = table["embedding.weight"].astype(np.float32)
    tok = Tokenizer.from_file(str(package_dir() / "tokenizers" /
                                  "l2_supercat_tokenizer_config.json"))
    out = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False).ids[:limit]
        out.append(table[ids].mean(0) if ids else np.zeros(table.shape[1], np.float32))
    return np.stack(out)


def test_features_are_wordllamas_mean_of_token_embeddings():
    b = create_backend("wordllama:l2_supercat")
    f = b.features(_data(), ["pool", "output"], batch_size=2)
    assert f["pool"].shape == (len(TEXTS), 256)
    np.testing.assert_allclose(f["pool"], _reference(TEXTS), atol=1e-6)
    np.testing.assert_array_equal(f["pool"], f["output"])
    assert not f["pool"][1].any()  # an empty text has no tokens: zeros, as WordLlama gives


def test_max_length_cuts_long_texts_and_is_part_of_the_identity():
    from transferscope.backends.wordllama import WordLlamaBackend

    short = WordLlamaBackend("l2_supercat", max_length=3)
    f = short.features(_data(), ["pool"])["pool"]
    np.testing.assert_allclose(f, _reference(TEXTS, limit=3), atol=1e-6)
    assert short.identity() != create_backend("wordllama:l2_supercat").identity()


def test_fine_tuning_trains_only_the_rows_of_tokens_seen():
    from transferscope.finetune import TransferModel

    b = create_backend("wordllama:l2_supercat")
    x = b.prepare(TEXTS[:2], _data())
    assert x.shape == (2, 2, b.max_length) and x.dtype == torch.int64
    net = TransferModel(b, 2)
    net.build_head(x)
    torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1])).backward()
    grad = net.backbone.embedding.weight.grad
    seen = torch.unique(x[0, 0, : int(x[0, 1].sum())])
    assert grad[seen].abs().sum(dim=1).gt(0).all()
    others = torch.ones(grad.shape[0], dtype=torch.bool)
    others[seen] = False
    assert not grad[others].any()


def test_random_twin_redraws_the_table():
    b = create_backend("wordllama:l2_supercat")
    twin = create_backend("random:wordllama:l2_supercat")
    w, t = b.module.embedding.weight, twin.module.embedding.weight
    assert w.shape == t.shape and not torch.equal(w, t)
    assert abs(float(t.detach().std()) - 1.0) < 0.01  # nn.Embedding's N(0, 1)


def test_unknown_config_or_size_is_a_one_line_error():
    with pytest.raises(InputError, match=r"ships \(l2_supercat\), got wordllama:nope"):
        create_backend("wordllama:nope")
    with pytest.raises(InputError, match="Expected wordllama:<config>"):
        create_backend("wordllama:l2_supercat@64")


def test_missing_package_says_what_to_install(monkeypatch):
    from transferscope.backends import wordllama

    monkeypatch.setattr(wordllama.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(OptionalDependencyError, match=r"transferscope\[wordllama\]"):
        create_backend("wordllama:l2_supercat")


def test_cli_bad_config_exits_2_without_traceback(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("text,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(8)))
    r = subprocess.run([sys.executable, "-m", "transferscope.cli", "rank", "--data", str(table),
                        "--model", "wordllama:nope"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "wordllama:nope" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
