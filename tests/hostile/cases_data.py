"""Hostile cases: the data a command reads - image folders, text tables, NumPy arrays, UCR
.ts/.arff files and feature files for ``tscope score``.

Each case makes its own small input in its folder. A correct case writes the intended reading
of its input to ``truth.npz`` (``X``, ``y``) and checks both what the loader returns and the
score the command printed against it (LogME of the raw input is exact, so a row lost, a class
merged or a wrong axis shows).
"""

import json
import struct
import warnings
import zipfile
import zlib

import numpy as np
from PIL import Image

from tests.fast import FAST_FINETUNE
from tests.hostile.harness import case

RNG = np.random.default_rng


# -- helpers --------------------------------------------------------------------------------
def rank(d, data, *extra):
    """``tscope rank`` on ``data`` with the raw input, LogME, no subsamples, a local cache, and
    the features as they are (``--width none``: the LogME checked is that of the raw reading)."""
    return ["rank", "--data", str(data), "--model", "raw", "--metric", "logme", "--subsamples",
            "0", "--no-baselines", "--width", "none", "--cache-dir", str(d / "c"), "--format",
            "json", *extra]


def score(path, *extra):
    """``tscope score`` of a features file with LogME, as JSON."""
    return ["score", str(path), "--metric", "logme", "--format", "json", *extra]


def truth(d, x, y):
    """The intended reading of the case's input."""
    np.savez(d / "truth.npz", X=np.asarray(x), y=np.asarray(y))


def _logme(x, y):
    from transferscope.metrics import get_metric

    return get_metric("logme").func(x, y)


def _raw_logme(kind, x, y):
    from transferscope.backends.simple import RawBackend
    from transferscope.data import Dataset

    inputs = [str(t) for t in x] if kind == "text" else x
    ds = Dataset("truth", kind, inputs, y)
    return _logme(RawBackend().features(ds, ["input"])["input"], y)


def _same_labels(a, b) -> bool:
    return np.asarray(a).astype(str).tolist() == np.asarray(b).astype(str).tolist()


def loads_as(spec, atol=0, **options):
    """Check: ``spec`` in the case folder loads as ``truth.npz`` (inputs within ``atol``), and the
    rank's LogME is that of the truth (exact reading only)."""

    def check(out, d):
        from transferscope.data import load_dataset

        t = np.load(d / "truth.npz")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = load_dataset(str(d / spec), **options)
        if not _same_labels(ds.labels, t["y"]):
            return False
        if ds.kind == "text":
            ok = list(ds.inputs) == t["X"].tolist()
        else:
            got = np.asarray(ds.inputs, dtype=np.float64)
            ok = got.shape == t["X"].shape and np.abs(got - t["X"]).max() <= atol
        value = [r for r in json.loads(out) if r["model"] == "raw"][0]["logme"]
        if atol:
            return ok and np.isfinite(value)
        want = _raw_logme(ds.kind, t["X"], t["y"])
        return ok and np.isclose(value, want, rtol=1e-6, atol=1e-9)

    return check


def scores_as(out, d):
    """Check for ``score``: the printed LogME is that of ``truth.npz``'s features and labels."""
    t = np.load(d / "truth.npz")
    value = json.loads(out)[0]["value"]
    return np.isclose(value, _logme(t["X"].astype(float), t["y"]), rtol=1e-6, atol=1e-9)


def warns(spec, needle, **options):
    """Check: loading ``spec`` warns with ``needle`` (a count) and the rank printed a row."""

    def check(out, d):
        from transferscope.data import load_dataset

        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            load_dataset(str(d / spec), **options)
        return any(needle in str(w.message) for w in seen) and loads_as(spec, **options)(out, d)

    return check


def blobs(n=30, dim=5, classes=3, seed=0):
    """Separable features: (n, dim) float32 and int labels."""
    rng = RNG(seed)
    y = np.arange(n) % classes
    return (rng.standard_normal((n, dim)) + y[:, None]).astype(np.float32), y


WORDS = {"a": "apple banana cherry", "b": "engine motor wheel", "NA": "river lake ocean",
         "N/A": "violin cello flute", "null": "granite basalt marble"}


def text_rows(classes, n=30):
    """(texts, labels): ``n`` short texts, the class words plus a counter."""
    texts = [f"{WORDS.get(c, 'word')} item{i}" for i, c in
             zip(range(n), [classes[i % len(classes)] for i in range(n)], strict=True)]
    return texts, [classes[i % len(classes)] for i in range(n)]


def csv_file(d, name, texts, labels, sep=",", encoding="utf-8", header=("text", "label")):
    """A text table written by hand (no quoting needed for these texts)."""
    lines = [sep.join(header)] + [f"{t}{sep}{lab}" for t, lab in zip(texts, labels, strict=True)]
    (d / name).write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return d / name


# -- text tables: "NA" is a class, nothing dropped silently -----------------------------------
def _na_csv(d):
    texts, labels = text_rows(["a", "b", "NA"])
    truth(d, texts, labels)
    return rank(d, csv_file(d, "t.csv", texts, labels))


case("data: csv class named NA keeps its 10 rows (3 classes)", _na_csv, "correct",
     check=loads_as("t.csv"))


def _na_tsv(d):
    texts, labels = text_rows(["N/A", "null", "a"])
    truth(d, texts, labels)
    return rank(d, csv_file(d, "t.tsv", texts, labels, sep="\t"))


case("data: tsv classes named N/A and null are classes", _na_tsv, "correct",
     check=loads_as("t.tsv"))


def _na_jsonl(d):
    texts, labels = text_rows(["a", "b", "NA"])
    rows = [{"text": t, "label": lab} for t, lab in zip(texts, labels, strict=True)]
    rows.append({"text": "orphan text", "label": None})  # truly missing: dropped, counted
    (d / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    truth(d, texts, labels)
    return rank(d, d / "t.jsonl")


case("data: jsonl label 'NA' kept, null label dropped with a counted warning", _na_jsonl,
     "correct", check=warns("t.jsonl", "dropped 1 of 31 rows"))


def _na_parquet(d):
    import pandas as pd

    texts, labels = text_rows(["a", "NA", "null"])
    pd.DataFrame({"text": texts, "label": labels}).to_parquet(d / "t.parquet")
    truth(d, texts, labels)
    return rank(d, d / "t.parquet")


case("data: parquet label strings NA and null are classes", _na_parquet, "correct",
     check=loads_as("t.parquet"))


def _empty_texts(d):
    texts, labels = text_rows(["a", "b", "NA"])
    all_t, all_l = list(texts), list(labels)
    all_t[3:3] = ["", "   "]
    all_l[3:3] = ["a", "b"]
    truth(d, texts, labels)
    return rank(d, csv_file(d, "t.csv", all_t, all_l))


case("data: csv rows with empty text dropped with a warning that counts them", _empty_texts,
     "correct", check=warns("t.csv", "dropped 2 of 32 rows"))


def _empty_label_cells(d):
    texts, labels = text_rows(["a", "b"])
    csv_file(d, "t.csv", texts + ["lonely"], labels + [""])
    truth(d, texts, labels)
    return rank(d, d / "t.csv")


case("data: csv empty label cell is missing: dropped and counted", _empty_label_cells,
     "correct", check=warns("t.csv", "1 without a label"))


def _na_text(d):
    texts, labels = text_rows(["a", "b"])
    texts[0], texts[1] = "NA", "null"
    truth(d, texts, labels)
    return rank(d, csv_file(d, "t.csv", texts, labels))


case("data: csv texts 'NA' and 'null' are texts, not missing", _na_text, "correct",
     check=loads_as("t.csv"))


def _int_labels(d):
    texts, labels = text_rows(["1", "2", "10"])
    truth(d, texts, [int(v) for v in labels])
    return rank(d, csv_file(d, "t.csv", texts, labels))


case("data: csv integer labels stay integers (10 is not 1)", _int_labels, "correct",
     check=loads_as("t.csv"))


def _padded_ints(d):
    texts, labels = text_rows(["7", "07", "8"])
    truth(d, texts, labels)
    return rank(d, csv_file(d, "t.csv", texts, labels))


case("data: csv labels '7' and '07' stay two classes", _padded_ints, "correct",
     check=loads_as("t.csv"))


def _quoted(d):
    import csv

    texts, labels = text_rows(["a", "b"])
    texts[0] = 'apple, "quoted", with commas'
    texts[1] = "engine\nover two lines"
    with open(d / "t.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels, strict=True))
    truth(d, texts, labels)
    return rank(d, d / "t.csv")


case("data: csv quoted fields with commas, quotes and newlines", _quoted, "correct",
     check=loads_as("t.csv"))


def _bom(d):
    texts, labels = text_rows(["a", "b"])
    truth(d, texts, labels)
    return rank(d, csv_file(d, "t.csv", texts, labels, encoding="utf-8-sig"))


case("data: csv with a UTF-8 byte-order mark finds its columns", _bom, "correct",
     check=loads_as("t.csv"))


def _latin1(d, *extra):
    texts, labels = text_rows(["a", "b"])
    texts = [t.replace("apple", "café crème") for t in texts]
    truth(d, texts, labels)
    return rank(d, csv_file(d, "t.csv", texts, labels, encoding="latin-1"), *extra)


case("data: csv in latin-1 says which encoding to pass", _latin1,
     needle="--encoding latin-1")
case("data: csv in latin-1 with --encoding latin-1", lambda d: _latin1(d, "--encoding",
                                                                        "latin-1"),
     "correct", check=loads_as("t.csv", encoding="latin-1"))


def _utf16(d):
    texts, labels = text_rows(["a", "b"])
    return rank(d, csv_file(d, "t.csv", texts, labels, encoding="utf-16"))


case("data: csv in UTF-16 names --encoding utf-16", _utf16, needle="--encoding utf-16")
case("data: csv --encoding that does not exist",
     lambda d: _latin1(d, "--encoding", "latin-99"), needle="encoding Python knows")


def _binary_csv(d):
    (d / "t.csv").write_bytes(RNG(0).integers(128, 256, 500, dtype=np.uint8).tobytes())
    return rank(d, d / "t.csv")


case("data: csv holding binary garbage", _binary_csv, needle="--encoding")
case("data: csv empty file", lambda d: (d / "t.csv").write_text("") or rank(d, d / "t.csv"),
     needle="empty file")
case("data: csv header only, no rows",
     lambda d: (d / "t.csv").write_text("text,label\n") and rank(d, d / "t.csv"),
     needle="got none of 0")


def _ragged(d):
    texts, labels = text_rows(["a", "b"])
    p = csv_file(d, "t.csv", texts, labels)
    p.write_text(p.read_text() + "one,two,three,four\n")
    return rank(d, p)


case("data: csv row with too many fields", _ragged, needle="number of fields")


def _wrong_column(d):
    texts, labels = text_rows(["a", "b"])
    return rank(d, csv_file(d, "t.csv", texts, labels, header=("text", "lable")))


case("data: csv label column misspelt in the file", _wrong_column,
     needle="did you mean 'lable'")


def _same_column(d):
    texts, labels = text_rows(["a", "b"])
    return rank(d, csv_file(d, "t.csv", texts, labels), "--text-column", "label")


case("data: csv same column for texts and labels", _same_column,
     needle="different text and label columns")


def _no_labels(d):
    texts, _ = text_rows(["a"])
    return rank(d, csv_file(d, "t.csv", texts, [""] * len(texts)))


case("data: csv every label empty", _no_labels, needle="30 without a label")


def _one_class(d):
    texts, labels = text_rows(["a"])
    return rank(d, csv_file(d, "t.csv", texts, labels))


case("data: csv with a single class", _one_class, needle="at least 2 classes")


def _bad_jsonl(d):
    (d / "t.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    return rank(d, d / "t.jsonl")


case("data: jsonl with a broken line", _bad_jsonl, needle="JSON object a line")


def _bad_parquet(d):
    (d / "t.parquet").write_bytes(b"PAR1" + bytes(100))
    return rank(d, d / "t.parquet")


case("data: parquet that is not one", _bad_parquet, needle="readable parquet")


# -- feature files for tscope score ---------------------------------------------------------
def _score_csv_na(d):
    x, y = blobs()
    labels = np.array(["NA", "a", "b"])[y]
    rows = ["f0,f1,f2,f3,f4,label"] + [",".join(f"{v:.6f}" for v in r) + f",{lab}"
                                       for r, lab in zip(x, labels, strict=True)]
    (d / "f.csv").write_text("\n".join(rows) + "\n")
    truth(d, np.round(x.astype(float), 6), labels)
    return score(d / "f.csv")


case("data: score csv label 'NA' is a class", _score_csv_na, "correct", check=scores_as)


def _score_csv_enc(d, *extra):
    x, y = blobs()
    labels = np.array(["été", "hiver", "printemps"])[y]
    rows = ["f0,f1,f2,f3,f4,label"] + [",".join(f"{v:.6f}" for v in r) + f",{lab}"
                                       for r, lab in zip(x, labels, strict=True)]
    (d / "f.csv").write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    truth(d, np.round(x.astype(float), 6), labels)
    return score(d / "f.csv", *extra)


case("data: score csv in latin-1 says which encoding to pass", _score_csv_enc,
     needle="--encoding latin-1")
case("data: score csv in latin-1 with --encoding latin-1",
     lambda d: _score_csv_enc(d, "--encoding", "latin-1"), "correct", check=scores_as)


def _score_text_col(d):
    (d / "f.csv").write_text("name,f0,label\nann,1.0,a\nbob,2.0,b\ncid,3.0,a\n")
    return score(d / "f.csv")


case("data: score csv with a non-numeric feature column", _score_text_col,
     needle="Expected numbers in column 'name'")


def _score_missing_label(d):
    (d / "f.csv").write_text("f0,f1,label\n1,2,a\n3,4,\n5,6,b\n")
    return score(d / "f.csv")


case("data: score csv with an empty label cell", _score_missing_label,
     needle="label on every row")


def _score_tsv(d):
    x, y = blobs()
    rows = ["f0\tf1\tf2\tf3\tf4\ty"] + ["\t".join(f"{v:.6f}" for v in r) + f"\t{lab}"
                                         for r, lab in zip(x, y, strict=True)]
    (d / "f.tsv").write_text("\n".join(rows) + "\n")
    truth(d, np.round(x.astype(float), 6), y)
    return score(d / "f.tsv")


case("data: score tsv features", _score_tsv, "correct", check=scores_as)


def _score_labels_txt(d, encoding="utf-8", n=30):
    x, y = blobs()
    np.save(d / "f.npy", x)
    words = np.array(["NA", "œuvre", "b"])[y][:n]
    (d / "labels.txt").write_bytes(("\n".join(words) + "\n").encode(encoding))
    truth(d, x, words)
    return score(d / "f.npy", "--labels", str(d / "labels.txt"))


case("data: score npy with a text labels file incl. 'NA'", _score_labels_txt, "correct",
     check=scores_as)
case("data: score text labels file in cp1252",
     lambda d: _score_labels_txt(d, encoding="cp1252"), needle="--encoding")
case("data: score text labels file one label short",
     lambda d: _score_labels_txt(d, n=29), needle="got 29")


def _object_npz(d, key="features"):
    x, y = blobs()
    arrays = {"features": x, "labels": y}
    arrays[key] = np.array([{"a": 1}] * 30, dtype=object)
    np.savez(d / "f.npz", **arrays)
    return d / "f.npz"


case("data: score npz whose features are Python objects",
     lambda d: score(_object_npz(d)), needle="Python objects")
case("data: score npz whose labels are Python objects",
     lambda d: score(_object_npz(d, "labels")), needle="Python objects")
case("data: score 0-byte npz",
     lambda d: (d / "f.npz").write_bytes(b"") or score(d / "f.npz"), needle="empty file")
case("data: score npz saved without arrays",
     lambda d: np.savez(d / "f.npz") or score(d / "f.npz"), needle="got keys []")
case("data: score npz that is text",
     lambda d: (d / "f.npz").write_text("features,labels\n") and score(d / "f.npz"),
     needle="not one")
case("data: score npy that is text",
     lambda d: (d / "f.npy").write_text("1 2 3\n") and score(d / "f.npy", "--labels",
                                                              str(d / "f.npy")),
     needle="not one")


def huge_npy(path, shape=(10**6, 10**6)):
    """An .npy whose header claims ``shape`` float64 (8 TB) but holds 64 bytes."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f8", "fortran_order": False, "shape": shape})
        fh.write(bytes(64))
    return path


case("data: score npy whose header claims 8 TB", lambda d: score(huge_npy(d / "f.npy")),
     needle="truncated or corrupt")


def forged_npz(path, member="X.npy", shape=(10**5, 10**5)):
    """An .npz whose array header claims ``shape`` float64 but the member holds 64 bytes."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    buf.write(bytes(64))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, buf.getvalue())
        z.writestr("y.npy", _npy_bytes(np.arange(30) % 3))
    return path


def _npy_bytes(a):
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def bomb_npz(path, declared=0x7FF00000):
    """An .npz whose ``X`` member declares ``declared`` bytes (header and zip directory agree)
    from a few compressed bytes: a zip bomb, caught before any decompression."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                               "shape": (1,)})
    header_len = len(buf.getvalue())
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|u1", "fortran_order": False, "shape": (declared - header_len,)})
    assert len(buf.getvalue()) == header_len
    buf.write(bytes(1000))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("X.npy", buf.getvalue())
        z.writestr("y.npy", _npy_bytes(np.arange(30) % 3))
    raw = bytearray(path.read_bytes())
    pos = raw.find(b"PK\x01\x02")  # central directory entry of X.npy: uncompressed size
    raw[pos + 24 : pos + 28] = struct.pack("<I", declared)
    path.write_bytes(bytes(raw))
    return path


case("data: score npz whose array header disagrees with its size (forged)",
     lambda d: score(forged_npz(d / "f.npz")), needle="corrupt or forged")
case("data: score npz zip bomb (2 GB from 1 kB)",
     lambda d: score(bomb_npz(d / "f.npz")), needle="'X' of f.npz")


# -- arrays: .npz / .npy datasets -----------------------------------------------------------
def images(n=30, c=3, h=8, w=8, seed=0):
    """(n, h, w, c) uint8 images whose mean tells the class, and int labels."""
    rng = RNG(seed)
    y = np.arange(n) % 3
    x = np.clip(rng.integers(0, 120, (n, h, w, c)) + 60 * y[:, None, None, None], 0, 255)
    return x.astype(np.uint8), y


def _nchw(d, c=3, h=32, w=32, *extra):
    x, y = images(c=c, h=h, w=w)
    np.savez(d / "a.npz", X=x.transpose(0, 3, 1, 2), y=y)
    truth(d, x, y)
    return rank(d, d / "a.npz", *extra)


case("data: npz images in NCHW (N, 3, 32, 32) are transposed", _nchw, "correct",
     check=loads_as("a.npz"))
case("data: npz grey images in NCHW (N, 1, 28, 28)", lambda d: _nchw(d, 1, 28, 28), "correct",
     check=loads_as("a.npz"))


def _nhwc(d):
    x, y = images(h=16, w=16)
    np.savez(d / "a.npz", X=x, y=y)
    truth(d, x, y)
    return rank(d, d / "a.npz")


case("data: npz images in NHWC stay as they are", _nhwc, "correct", check=loads_as("a.npz"))
case("data: npz images (N, 3, 8, 3): ambiguous layout asks for --layout",
     lambda d: _nchw(d, 3, 8, 3), needle="--layout")
case("data: npz ambiguous images with --layout NCHW",
     lambda d: _nchw(d, 3, 8, 3, "--layout", "NCHW"), "correct",
     check=loads_as("a.npz", layout="NCHW"))
case("data: --layout NHWC on an NCHW array names the channel count",
     lambda d: _nchw(d, 3, 32, 32, "--layout", "NHWC"), needle="32 channels")
case("data: --layout on a text table",
     lambda d: rank(d, csv_file(d, "t.csv", *text_rows(["a", "b"])), "--layout", "NCHW"),
     needle="drop --layout")
case("data: --layout on a 2-D feature array",
     lambda d: np.savez(d / "a.npz", X=blobs()[0], y=blobs()[1])
     or rank(d, d / "a.npz", "--layout", "NHWC"), needle="drop --layout")
case("data: npz images with 5 channels",
     lambda d: np.savez(d / "a.npz", X=np.zeros((30, 8, 8, 5), np.uint8),
                        y=np.arange(30) % 3) or rank(d, d / "a.npz"),
     needle="1, 3 or 4 channels")


def _float255(d):
    x, y = images()
    np.savez(d / "a.npz", X=x.astype(np.float32), y=y)
    return rank(d, d / "a.npz")


case("data: npz float images in 0..255 (not [0, 1])", _float255, needle="[0, 1]")


def _uint16(d):
    x, y = images()
    np.savez(d / "a.npz", X=x.astype(np.uint16) * 257, y=y)  # the same picture in 16 bits
    truth(d, x, y)
    return rank(d, d / "a.npz")


case("data: npz uint16 images scaled by their bit depth, not saturated", _uint16, "correct",
     check=loads_as("a.npz"))


def _series(d, shape=(30, 2, 16)):
    rng = RNG(1)
    y = np.arange(shape[0]) % 3
    x = (rng.standard_normal(shape) + y[:, None, None]).astype(np.float32)
    np.savez(d / "s.npz", X=x, y=y)
    truth(d, x, y)
    return rank(d, d / "s.npz")


case("data: npz 3-D series (N, channels, length)", _series, "correct",
     check=loads_as("s.npz"))


def _labels_column(d):
    x, y = blobs()
    np.savez(d / "a.npz", X=x, y=y[:, None])
    truth(d, x, y)
    return rank(d, d / "a.npz")


case("data: npz labels of shape (N, 1)", _labels_column, "correct", check=loads_as("a.npz"))


def _bytes_labels(d):
    x, y = blobs()
    np.savez(d / "a.npz", X=x, y=np.array([b"NA", b"cat", b"dog"])[y])
    truth(d, x, np.array(["NA", "cat", "dog"])[y])
    return rank(d, d / "a.npz")


case("data: npz byte-string labels incl. NA", _bytes_labels, "correct",
     check=loads_as("a.npz"))


def _npz(d, x=None, y=None, **more):
    bx, by = blobs()
    np.savez(d / "a.npz", X=bx if x is None else x, y=by if y is None else y, **more)
    return rank(d, d / "a.npz")


case("data: npz 0-byte file", lambda d: (d / "a.npz").write_bytes(b"")
     or rank(d, d / "a.npz"), needle="empty file")
case("data: npz with no samples", lambda d: _npz(d, np.zeros((0, 5)), np.zeros(0, int)),
     needle="got 0")
case("data: npz with object labels",
     lambda d: _npz(d, y=np.array([1, "a", None] * 10, dtype=object)), needle="Python objects")
case("data: npz with object inputs",
     lambda d: _npz(d, x=np.array([[1, "a"]] * 30, dtype=object)), needle="Python objects")
case("data: npz with one-hot labels",
     lambda d: _npz(d, y=np.eye(3)[np.arange(30) % 3]), needle="argmax")
case("data: npz with continuous (regression) labels",
     lambda d: _npz(d, y=np.linspace(0, 1, 30)), needle="regression")
case("data: npz with NaN labels",
     lambda d: _npz(d, y=np.where(np.arange(30) == 4, np.nan, np.arange(30) % 3)),
     needle="1 NaN/Inf labels")
case("data: npz with NaN inputs",
     lambda d: _npz(d, x=np.where(np.arange(150).reshape(30, 5) == 7, np.nan, 1.0)),
     needle="NaN/Inf in 1 sample(s) (first: 1)")
case("data: npz with string inputs",
     lambda d: _npz(d, x=np.array([["a", "b"]] * 30)), needle="numeric inputs")
case("data: npz with a scalar input array", lambda d: _npz(d, x=np.float32(3)),
     needle="scalar")
case("data: npz with 5-D inputs", lambda d: _npz(d, x=np.zeros((30, 2, 2, 2, 2))),
     needle="got shape (30, 2, 2, 2, 2)")
case("data: npz without X and y",
     lambda d: np.savez(d / "a.npz", inputs_=np.zeros(3)) or rank(d, d / "a.npz"),
     needle="got keys ['inputs_']")
def _not_array(d):
    with zipfile.ZipFile(d / "a.npz", "w") as z:
        z.writestr("X.npy", "hello")
        z.writestr("y.npy", _npy_bytes(np.arange(30) % 3))
    return rank(d, d / "a.npz")


case("data: npz whose X member is not an array", _not_array, needle="not one")
case("data: npz forged header (80 GB in 64 bytes)",
     lambda d: rank(d, forged_npz(d / "a.npz")), needle="corrupt or forged")
case("data: npz zip bomb", lambda d: rank(d, bomb_npz(d / "a.npz")), needle="'X' of a.npz")
case("data: npz that is a renamed CSV",
     lambda d: (d / "a.npz").write_text("x,y\n1,2\n") and rank(d, d / "a.npz"),
     needle="zip")


def _npy(d, x=None, labels=None):
    bx, by = blobs()
    np.save(d / "x.npy", bx if x is None else x)
    extra = []
    if labels is not None:
        np.save(d / "y.npy", labels)
        extra = ["--labels", str(d / "y.npy")]
    return rank(d, d / "x.npy", *extra)


case("data: npy without --labels", lambda d: _npy(d), needle="--labels")
case("data: npy labels one short", lambda d: _npy(d, labels=np.arange(29) % 3),
     needle="30 vs 29")
case("data: npy labels that are objects",
     lambda d: _npy(d, labels=np.array([None] * 30, dtype=object)), needle="Python objects")
case("data: npy 0-byte inputs", lambda d: (d / "x.npy").write_bytes(b"")
     or rank(d, d / "x.npy", "--labels", str(d / "x.npy")), needle="empty file")
case("data: npy whose header claims 8 TB",
     lambda d: huge_npy(d / "x.npy") and np.save(d / "y.npy", np.arange(30) % 3)
     or rank(d, d / "x.npy", "--labels", str(d / "y.npy")), needle="truncated or corrupt")


def _npy_text_labels(d):
    x, y = blobs()
    np.save(d / "x.npy", x)
    names = np.array(["NA", "cat", "dog"])[y]
    (d / "y.txt").write_text(" ".join(names))
    truth(d, x, names)
    return rank(d, d / "x.npy", "--labels", str(d / "y.txt"))


case("data: npy with a text labels file", _npy_text_labels, "correct",
     check=lambda out, d: loads_as("x.npy", labels_path=str(d / "y.txt"))(out, d))


def _npz_labels_override(d):
    x, y = blobs()
    np.savez(d / "a.npz", X=x, y=np.zeros(30, int))
    np.save(d / "y.npy", y)
    truth(d, x, y)
    return rank(d, d / "a.npz", "--labels", str(d / "y.npy"))


case("data: npz with --labels uses those labels", _npz_labels_override, "correct",
     check=lambda out, d: loads_as("a.npz", labels_path=str(d / "y.npy"))(out, d))


# -- image folders --------------------------------------------------------------------------
def folder(d, save, n=4, classes=("cat", "dog", "owl")):
    """``d/imgs/<class>/<i>``: ``save(path_stem, grey_uint8_array)`` writes each image."""
    root = d / "imgs"
    rng = RNG(0)
    xs, ys = [], []
    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            a = np.clip(rng.integers(0, 80, (6, 7)) + 80 * k, 0, 255).astype(np.uint8)
            save(root / cls / f"{i}", a)
            xs.append(a)
            ys.append(cls)
    return root, np.stack(xs), np.array(ys)


def _eight_and_sixteen(d, suffix):
    root, x, y = folder(d, lambda p, a: Image.fromarray(a.astype(np.uint16) * 257)
                        .save(p.with_suffix(suffix)))
    truth(d, x, y)
    return rank(d, root)


case("data: images 16-bit PNG read like their 8-bit originals",
     lambda d: _eight_and_sixteen(d, ".png"), "correct", check=loads_as("imgs", atol=1))
case("data: images 16-bit TIFF read like their 8-bit originals",
     lambda d: _eight_and_sixteen(d, ".tif"), "correct", check=loads_as("imgs", atol=1))


def png16_rgb(path, a):
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[r].astype(">u2").tobytes() for r in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2,
                                                                         0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _rgb16(d):
    def save(p, a):
        rgb = np.stack([a, 255 - a, a // 2], -1)
        png16_rgb(p.with_suffix(".png"), rgb.astype(np.uint16) * 257)

    root, x, y = folder(d, save)
    truth(d, np.stack([x, 255 - x, x // 2], -1), y)
    return rank(d, root)


case("data: images 16-bit RGB PNG", _rgb16, "correct", check=loads_as("imgs", atol=1))


def _float_tiff(d, scale=1 / 255):
    root, x, y = folder(d, lambda p, a: Image.fromarray(a.astype(np.float32) * scale)
                        .save(p.with_suffix(".tif")))
    truth(d, x, y)
    return rank(d, root)


case("data: images 32-bit float TIFF in [0, 1]", _float_tiff, "correct",
     check=loads_as("imgs", atol=1))
case("data: images 32-bit float TIFF in 0..255 (not [0, 1])",
     lambda d: _float_tiff(d, 1.0), needle="expected [0, 1]")


def _int32_tiff(d):
    root, x, y = folder(d, lambda p, a: Image.fromarray(a.astype(np.int32) * 8421504)
                        .save(p.with_suffix(".tif")))  # 8 bits scaled to signed 32 bits
    truth(d, x, y)
    return rank(d, root)


case("data: images 32-bit integer TIFF scaled by 32 bits", _int32_tiff, "correct",
     check=loads_as("imgs", atol=1))


def _mixed_depths(d):
    root, x, y = folder(d, lambda p, a: (Image.fromarray(a).save(p.with_suffix(".png"))
                                         if int(p.name) % 2 else
                                         Image.fromarray(a.astype(np.uint16) * 257)
                                         .save(p.with_suffix(".png"))))
    truth(d, x, y)
    return rank(d, root)


case("data: images 8 and 16-bit PNG in one folder", _mixed_depths, "correct",
     check=loads_as("imgs", atol=1))


def _png(p, a):
    Image.fromarray(a).save(p.with_suffix(".png"))


def _with_bad(d, write_bad, *extra):
    root, x, y = folder(d, _png)
    write_bad(root / "dog")
    truth(d, x, y)
    return rank(d, root, *extra)


def _truncated(dog):
    Image.fromarray(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
                    ).save(dog / "t.png")
    data = (dog / "t.png").read_bytes()
    (dog / "t.png").write_bytes(data[: len(data) // 2])


def png_header(path, w, h):
    """A PNG that declares ``w`` x ``h`` pixels (the header of a decompression bomb)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0,
                                                                         0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(w + 1))) + chunk(b"IEND", b""))


case("data: images truncated PNG named in the error", lambda d: _with_bad(d, _truncated),
     needle="dog/t.png")
case("data: images truncated PNG skipped with --skip-corrupt",
     lambda d: _with_bad(d, _truncated, "--skip-corrupt"), "correct",
     check=loads_as("imgs", skip_corrupt=True))
case("data: images decompression bomb (20000 x 20000) named in the error",
     lambda d: _with_bad(d, lambda dog: png_header(dog / "bomb.png", 20000, 20000)),
     needle="decompression bomb")
case("data: images decompression bomb skipped with --skip-corrupt",
     lambda d: _with_bad(d, lambda dog: png_header(dog / "bomb.png", 20000, 20000),
                         "--skip-corrupt"), "correct",
     check=loads_as("imgs", skip_corrupt=True))
case("data: images just over Pillow's pixel limit (a bomb warning) is an error",
     lambda d: _with_bad(d, lambda dog: png_header(dog / "big.png", 9500, 9500)),
     needle="dog/big.png")
case("data: images a text file among the images",
     lambda d: _with_bad(d, lambda dog: (dog / "notes.txt").write_text("hello")),
     needle="dog/notes.txt (not an image")
case("data: images hidden files are ignored",
     lambda d: _with_bad(d, lambda dog: (dog / ".DS_Store").write_bytes(b"\0\1")), "correct",
     check=loads_as("imgs"))
def _loose(d):
    (d / "imgs").mkdir()
    for i in range(3):
        _png(d / "imgs" / f"{i}", np.zeros((4, 4), np.uint8))
    return rank(d, d / "imgs")


case("data: images folder without class folders", _loose, needle="3 loose file(s)")
case("data: images empty folder",
     lambda d: (d / "imgs").mkdir() or rank(d, d / "imgs"), needle="class sub-folders")
case("data: images a class folder without images",
     lambda d: _with_bad(d, lambda dog: dog.parent.joinpath("emu").mkdir()),
     needle="got none in emu/")
case("data: images class folders nested one level too deep",
     lambda d: _with_bad(d, lambda dog: dog.joinpath("puppies").mkdir()),
     needle="sub-folders in dog/ (puppies)")
case("data: images a single class",
     lambda d: rank(d, folder(d, _png, classes=("cat",))[0]), needle="at least 2 classes")


def _palette(d):
    def save(p, a):
        im = Image.fromarray(np.stack([a, a, a], -1)).convert("P")
        im.info["transparency"] = 0
        im.save(p.with_suffix(".png"), transparency=0)

    root, x, y = folder(d, save)
    return rank(d, root)


case("data: images palette PNG with transparency", _palette, "correct",
     check=lambda out, d: np.isfinite(json.loads(out)[0]["logme"]))


def _grey_alpha(d):
    root, x, y = folder(d, lambda p, a: Image.fromarray(np.stack([a, np.full_like(a, 200)], -1),
                                                        "LA").save(p.with_suffix(".png")))
    truth(d, x, y)
    return rank(d, root)


case("data: images grey with alpha stay grey", _grey_alpha, "correct",
     check=loads_as("imgs"))


# -- UCR .ts and .arff ----------------------------------------------------------------------
def ts(d, header="@problemName T\n@classLabel true a b\n", rows=None, name="t.ts",
       encoding="utf-8"):
    """A .ts file: ``header``, @data and ``rows`` (default 12 equal-length univariate rows)."""
    if rows is None:
        rows = [f"{i},{i + 1},{i * 2},{i % 3}:{'ab'[i % 2]}" for i in range(12)]
    (d / name).write_bytes((header + "@data\n" + "\n".join(rows) + "\n").encode(encoding))
    return d / name


def _good_ts(d):
    rows = [f"{i},{i + 1},{i * 2}:{-i},{i},{i}:{'ab'[i % 2]}" for i in range(12)]
    x = np.array([[[i, i + 1, i * 2], [-i, i, i]] for i in range(12)], np.float32)
    truth(d, x, ["ab"[i % 2] for i in range(12)])
    return rank(d, ts(d, rows=rows))


case("data: ts two-channel file", _good_ts, "correct", check=loads_as("t.ts"))
case("data: ts regression file (@targetLabel true)",
     lambda d: rank(d, ts(d, "@problemName R\n@targetLabel true\n",
                          [f"{i},{i + 1}:{i * 0.5}" for i in range(12)])),
     needle="is a regression dataset (@targetLabel true)")
case("data: ts file without labels (@classLabel false)",
     lambda d: rank(d, ts(d, "@classLabel false\n", [f"{i},{i + 1}" for i in range(12)])),
     needle="@classLabel false")
case("data: ts missing value '?'",
     lambda d: rank(d, ts(d, rows=["1,2,3:a", "4,?,6:b", "7,8,9:a"])),
     needle="missing value ('?') on line 5")
case("data: ts missing value NaN",
     lambda d: rank(d, ts(d, rows=["1,2,3:a", "4,NaN,6:b", "7,8,9:a"])),
     needle="missing value ('NaN')")
case("data: ts unequal lengths",
     lambda d: rank(d, ts(d, rows=["1,2,3:a", "4,5:b", "7,8,9:a"])),
     needle="unequal lengths [2, 3]")


def _unequal_ts(d, how):
    rows = [f"{i},{i + 2},{i * 2}:{'ab'[i % 2]}" if i % 3 else f"{i},{i + 4}:{'ab'[i % 2]}"
            for i in range(12)]
    grid = np.linspace(0, 1, 3)
    x = [[[i, i + 2, i * 2]] if i % 3 else
         [[i, i + 4, 0]] if how == "pad" else [np.interp(grid, [0, 1], [i, i + 4]).tolist()]
         for i in range(12)]
    truth(d, np.array(x, np.float32), ["ab"[i % 2] for i in range(12)])
    return rank(d, ts(d, rows=rows), "--unequal", how)


case("data: ts unequal lengths with --unequal pad", lambda d: _unequal_ts(d, "pad"), "correct",
     check=loads_as("t.ts", atol=1e-6, unequal="pad"))
case("data: ts unequal lengths with --unequal resample", lambda d: _unequal_ts(d, "resample"),
     "correct", check=loads_as("t.ts", atol=1e-6, unequal="resample"))
case("data: --unequal on a file that is not a UCR series",
     lambda d: np.savez(d / "a.npz", X=np.zeros((6, 4)), y=np.arange(6) % 2)
     or rank(d, d / "a.npz", "--unequal", "pad"), needle="drop --unequal")
case("data: ts @classLabel False (capitalised) is unlabelled",
     lambda d: rank(d, ts(d, "@classLabel False\n", [f"{i},{i + 1}" for i in range(12)])),
     needle="@classLabel false")
case("data: ts @timeStamps True (capitalised)",
     lambda d: rank(d, ts(d, "@timeStamps True\n@classLabel true a b\n",
                          ["(2020-01-01 00:00:00,1.0):a"])), needle="@timestamps true")
case("data: ts label the header does not declare",
     lambda d: rank(d, ts(d, rows=["1,2,3:a", "4,5,6:c"])), needle="got 'c' on line 5")
case("data: ts without @data",
     lambda d: (d / "t.ts").write_text("1,2,3:a\n") and rank(d, d / "t.ts"),
     needle="@data")
case("data: ts row without a label",
     lambda d: rank(d, ts(d, "", ["1,2,3", "4,5,6"])), needle="without a ':label'")
case("data: ts rows with different channel counts",
     lambda d: rank(d, ts(d, rows=["1,2:3,4:a", "5,6:b"])), needle="2 channel(s)")
case("data: ts with timestamps",
     lambda d: rank(d, ts(d, "@timestamps true\n@classLabel true a b\n",
                          ["(2020-01-01 00:00:00,1.0):a"])), needle="@timestamps true")
case("data: ts a non-number",
     lambda d: rank(d, ts(d, rows=["1,2,3:a", "4,x5,6:b"])), needle="got 'x5' on line 5")
case("data: ts in latin-1 says which encoding to pass",
     lambda d: rank(d, ts(d, "@classLabel true é b\n", ["1,2:é", "3,4:b"],
                          encoding="latin-1")), needle="--encoding latin-1")


def _latin1_ts(d):
    truth(d, np.array([[[1, 2]], [[3, 4]], [[5, 6]], [[7, 8]]], np.float32),
          ["é", "b", "é", "b"])
    return rank(d, ts(d, "@classLabel true é b\n", ["1,2:é", "3,4:b", "5,6:é", "7,8:b"],
                      encoding="latin-1"), "--encoding", "latin-1")


case("data: ts in latin-1 with --encoding latin-1", _latin1_ts, "correct",
     check=loads_as("t.ts", encoding="latin-1"))
case("data: ts no rows after @data",
     lambda d: rank(d, ts(d, rows=[])), needle="got none")


def arff(d, attrs, rows, name="t.arff"):
    """An .arff file with the given attribute lines and data rows."""
    (d / name).write_text("@relation t\n" + "\n".join(attrs) + "\n@data\n"
                          + "\n".join(rows) + "\n")
    return d / name


STEPS = ["@attribute t0 numeric", "@attribute t1 numeric", "@attribute t2 numeric"]


def _good_arff(d):
    rows = [f"{i},{i + 1},{i * 2},{'ab'[i % 2]}" for i in range(12)]
    truth(d, np.array([[[i, i + 1, i * 2]] for i in range(12)], np.float32),
          ["ab"[i % 2] for i in range(12)])
    return rank(d, arff(d, STEPS + ["@attribute target {a,b}"], rows))


case("data: arff univariate file", _good_arff, "correct", check=loads_as("t.arff"))
case("data: arff numeric target (regression)",
     lambda d: rank(d, arff(d, STEPS + ["@attribute target numeric"],
                            [f"{i},{i},{i},{i * 0.1}" for i in range(12)])),
     needle="a regression dataset?")
case("data: arff missing values",
     lambda d: rank(d, arff(d, STEPS + ["@attribute target {a,b}"],
                            ["1,2,3,a", "4,?,6,b", "7,8,9,a"])),
     needle="missing values ('?') in 1 row(s) (first: data row 2)")
case("data: arff missing class",
     lambda d: rank(d, arff(d, STEPS + ["@attribute target {a,b}"],
                            ["1,2,3,a", "4,5,6,?", "7,8,9,b"])), needle="missing values")
case("data: arff that is garbage",
     lambda d: (d / "t.arff").write_text("hello\nworld\n") and rank(d, d / "t.arff"),
     needle="valid .arff")
case("data: arff multivariate (relational)",
     lambda d: rank(d, arff(d, ["@attribute series relational", "@attribute a numeric",
                                "@end series", "@attribute target {a,b}"],
                            ["'1\\n2',a", "'3\\n4',b"])), needle="t.arff")
case("data: arff string time steps",
     lambda d: rank(d, arff(d, ["@attribute t0 string", "@attribute target {a,b}"],
                            ["x,a", "y,b"])), needle="t.arff")


# -- subsampling options --------------------------------------------------------------------
def _sub(d, *extra):
    x, y = blobs()
    np.savez(d / "a.npz", X=x, y=y)
    return rank(d, d / "a.npz", *extra)


case("data: --fraction with --per-class", lambda d: _sub(d, "--fraction", "0.5",
                                                         "--per-class", "3"),
     needle="got both")
case("data: --per-class 0", lambda d: _sub(d, "--per-class", "0"), needle="per_class >= 1")
case("data: --per-class -2", lambda d: _sub(d, "--per-class", "-2"), needle="per_class >= 1")
case("data: --fraction 0", lambda d: _sub(d, "--fraction", "0"), needle="0 < fraction <= 1")
case("data: --fraction 1.5", lambda d: _sub(d, "--fraction", "1.5"),
     needle="0 < fraction <= 1")
case("data: --fraction nan", lambda d: _sub(d, "--fraction", "nan"),
     needle="0 < fraction <= 1")
case("data: --per-class not a number", lambda d: _sub(d, "--per-class", "ten"),
     needle="invalid int value")


def _per_class_too_many(d):
    x, y = blobs()
    np.savez(d / "a.npz", X=x, y=y)
    truth(d, x, y)
    return rank(d, d / "a.npz", "--per-class", "50")


case("data: --per-class above every class size keeps all (warned)", _per_class_too_many,
     "correct", check=lambda out, d: np.isclose(json.loads(out)[0]["logme"],
                                                _raw_logme("array", *blobs())))
case("data: --data path that does not exist",
     lambda d: rank(d, d / "nope.csv"), needle="Expected a dataset path")
case("data: --data file of an unknown kind",
     lambda d: (d / "a.xlsx").write_text("x") and rank(d, d / "a.xlsx"), needle="'a.xlsx'")


# -- fine-tuning reads the same loaders (tiny data, one epoch) --------------------------------
NET = """
import torch
from torch import nn

def fcn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                         nn.Flatten())
"""


def finetune(d, data):
    """``tscope finetune`` of a tiny 1-D CNN on ``data``, one epoch and seed, no store."""
    (d / "net.py").write_text(NET)
    return ["finetune", *FAST_FINETUNE, "--data", str(data), "--model",
            f"torch:{d / 'net.py'}:fcn", "--epochs", "1", "--seeds", "1", "--no-db"]


case("data: finetune on a regression .ts file refused before training",
     lambda d: finetune(d, ts(d, "@targetLabel true\n", [f"{i},{i}:{i / 3}" for i in range(9)])),
     needle="regression dataset")
case("data: finetune on series with NaN refused before training",
     lambda d: np.savez(d / "s.npz", X=np.full((30, 1, 16), np.nan, np.float32),
                        y=np.arange(30) % 3) or finetune(d, d / "s.npz"),
     needle="NaN/Inf in 30 sample(s)")
