"""Streaming pipeline vs the in-memory path: peak memory and images/s.

    flock /tmp/bench.lock python bench/pipeline.py [--n 20000] [--limit-seconds 240]
        [--n-memory 2000] [--n-finetune 1000] [--num-workers 0] [--batch-size 32]

Generates ``--n`` seeded 224 x 224 JPEG images (10 class folders) under ``--root`` (default
/tmp/tscope-pipeline-<n>; reused when present), then runs each case in its own process and
reads its peak resident memory (``resource.getrusage``: the process and its loader workers)
against the resident memory it had once the model was built and one batch had run ("beyond the
model"; for fine-tuning, once one short epoch had trained at the same batch size, so the
optimizer state and the activations backward keeps for one batch count as the model's):

- extract, stream: ``open_image_folder`` (lazy decoding) + ``extract_features`` with
  effnet-lite:0 at 224 px, features written to a fresh cache as they come; cut after
  ``--limit-seconds`` (the memory of a streamed run does not grow with the images done);
- extract, memory: ``--n-memory`` images decoded into one in-memory array (what
  ``load_image_folder`` holds for a folder of that size), then the same extraction;
- finetune epoch, stream / memory: one epoch of full fine-tuning (batch 32, fp32) on a
  ``--n-finetune`` image subset, the split streamed through the DataLoader or prepared as one
  in-memory tensor (the path every split took before streaming).

Target: a streamed case stays under 2 GiB beyond the model. Prints a table and writes
bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL = "effnet-lite:0@224"
CLASSES = 10
GIB = 1 << 30


def generate(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` 224 x 224 RGB JPEGs in ``CLASSES`` folders (smooth seeded patterns plus noise,
    class-dependent colour), reused when ``root/done.json`` says they are there."""
    from PIL import Image

    done = root / "done.json"
    if done.is_file() and json.loads(done.read_text()).get("n") == n:
        return root
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for c in range(CLASSES):
        (root / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
    tint = rng.uniform(0, 255, (CLASSES, 3))
    for i in range(n):
        c = i % CLASSES
        low = rng.uniform(0, 255, (8, 8, 3))
        img = Image.fromarray(low.astype(np.uint8)).resize((224, 224), Image.BILINEAR)
        a = 0.6 * np.asarray(img, np.float32) + 0.4 * tint[c] + rng.normal(0, 12, (224, 224, 3))
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(
            root / f"class{c:02d}" / f"{i:06d}.jpg", quality=90)
    done.write_text(json.dumps({"n": n, "seed": seed}))
    print(f"generated {n} images in {root} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return root


def _open(root, n: int, mode: str):
    """``n`` images of the folder (``n // CLASSES`` a class, seeded): lazily decoded
    (``stream``), or decoded into one in-memory array as ``load_image_folder`` holds a folder
    of that size (``memory``)."""
    from transferscope.data import Dataset, subsample
    from transferscope.data.stream import open_image_folder

    data = open_image_folder(root)
    if n < len(data):
        data = subsample(data, per_class=n // CLASSES, seed=0)
    if mode == "stream":
        return data
    return Dataset(data.name, "image", np.stack([data.inputs[i] for i in range(len(data))]),
                   data.labels, data.meta)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak() -> int:
    """Peak resident bytes of this process and (separately) of its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return own + kids


def case_extract(args) -> dict:
    from transferscope.backends import create_backend
    from transferscope.data.stream import open_image_folder
    from transferscope.features import FeatureCache, extract_features

    backend = create_backend(MODEL)
    warm = open_image_folder(args.root)
    backend.features(warm.subset(np.arange(args.batch_size)), [backend.default_layer()],
                     batch_size=args.batch_size, device="cpu")
    base = _rss()
    t0 = time.perf_counter()
    data = _open(args.root, args.n_case, args.mode)
    load_s = time.perf_counter() - t0
    done = {"rows": 0, "cut": False}
    original = backend.iter_features
    deadline = time.perf_counter() + args.limit_seconds

    def limited(*a, **k):  # stop after --limit-seconds (the entry is then not completed)
        for rows, values in original(*a, **k):
            done["rows"] += rows.stop - rows.start
            yield rows, values
            if time.perf_counter() > deadline and done["rows"] < len(data):
                done["cut"] = True
                return

    backend.iter_features = limited
    with tempfile.TemporaryDirectory(dir="/tmp") as cache:
        t1 = time.perf_counter()
        try:
            extract_features(backend, data, cache=FeatureCache(cache), batch_size=args.batch_size,
                             device="cpu", num_workers=args.num_workers, mmap=True)
        except Exception as exc:  # noqa: BLE001 - the cut run ends with a short-rows error
            if not done["cut"]:
                raise
            print(f"  (cut: {type(exc).__name__})", file=sys.stderr)
        run_s = time.perf_counter() - t1
    return {"images": done["rows"], "of": len(data), "cut": done["cut"], "load_s": load_s,
            "run_s": run_s, "images_per_s": done["rows"] / run_s,
            "peak_beyond_model_gib": (_peak() - base) / GIB, "model_rss_gib": base / GIB}


def case_finetune(args) -> dict:
    from transferscope.backends import create_backend
    from transferscope.config import TrainConfig
    from transferscope.finetune.run import make_split, train_on_split

    backend = create_backend(MODEL)
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, patience=5, seed=0, device="cpu",
                      precision="fp32", num_workers=args.num_workers)
    # the baseline: the model after one short epoch of training at this batch size (weights,
    # optimizer state, the activations backward needs: bounded by the batch, not the data)
    warm = _open(args.root, 10 * CLASSES, "stream")
    train_on_split(backend, make_split(backend, warm, stream=True), "full", {}, cfg)
    base = _rss()
    t0 = time.perf_counter()
    data = _open(args.root, args.n_case, args.mode)
    split = make_split(backend, data, stream=args.mode == "stream",
                       num_workers=args.num_workers)
    prep_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    _, hist = train_on_split(backend, split, "full", {}, cfg)
    run_s = time.perf_counter() - t1
    n_train, n_val = len(split.idx[0]), len(split.idx[1])
    return {"images": n_train, "val_images": n_val, "of": len(data), "cut": False,
            "load_s": prep_s, "run_s": run_s, "images_per_s": n_train / run_s,
            "val_acc": hist.best_val_acc,
            "peak_beyond_model_gib": (_peak() - base) / GIB, "model_rss_gib": base / GIB}


def child(args) -> int:
    import torch

    torch.manual_seed(0)
    out = (case_extract if args.case == "extract" else case_finetune)(args)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="images generated and streamed")
    ap.add_argument("--n-memory", type=int, default=2000,
                    help="images of the in-memory extraction case")
    ap.add_argument("--n-finetune", type=int, default=1000,
                    help="images of the fine-tuning cases (60 %% train one epoch)")
    ap.add_argument("--limit-seconds", type=float, default=240,
                    help="cut each extraction case after this long")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--root", help="image folder (default /tmp/tscope-pipeline-<n>)")
    ap.add_argument("--cases", default="extract-stream,extract-memory,finetune-stream,"
                                       "finetune-memory")
    ap.add_argument("--out", default=str(HERE / "results" / "pipeline.json"))
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--n-case", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.root = Path(args.root or f"/tmp/tscope-pipeline-{args.n}")
    if args.case:
        return child(args)

    generate(args.root, args.n)
    small = max(args.n_memory, args.n_finetune)  # the other cases open a folder of their size
    roots = {"extract-stream": args.root}
    if small < args.n:
        generate(Path(f"{args.root}-{small}"), small)
    for name in ("extract-memory", "finetune-stream", "finetune-memory"):
        roots[name] = Path(f"{args.root}-{small}") if small < args.n else args.root
    sizes = {"extract-stream": args.n, "extract-memory": args.n_memory,
             "finetune-stream": args.n_finetune, "finetune-memory": args.n_finetune}
    rows = []
    for name in args.cases.split(","):
        case, mode = name.split("-")
        cmd = [sys.executable, __file__, "--case", case, "--mode", mode, "--n-case",
               str(sizes[name]), "--root", str(roots[name]), "--n", str(args.n),
               "--limit-seconds", str(args.limit_seconds), "--batch-size", str(args.batch_size),
               "--num-workers", str(args.num_workers)]
        print(f"{name}: {sizes[name]} images ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        rows.append({"case": name, **json.loads(lines[-1][len("RESULT "):])})
        r = rows[-1]
        print(f"  {r['images']} images in {r['run_s']:.0f} s, {r['images_per_s']:.1f}/s, peak "
              f"{r['peak_beyond_model_gib']:.2f} GiB beyond the model", flush=True)
    header = (f"{'case':17s} {'images':>13s} {'load s':>7s} {'run s':>7s} {'img/s':>7s} "
              f"{'peak beyond model':>18s}")
    print(f"\n{MODEL}, batch {args.batch_size}, num_workers {args.num_workers}, "
          f"{os.cpu_count()} CPUs, fp32; generated folder n = {args.n}")
    print(header)
    for r in rows:
        imgs = f"{r['images']}/{r['of']}" + ("*" if r["cut"] else "")
        print(f"{r['case']:17s} {imgs:>13s} {r['load_s']:7.1f} {r['run_s']:7.1f} "
              f"{r['images_per_s']:7.1f} {r['peak_beyond_model_gib']:15.2f} GiB")
    print("* cut by --limit-seconds; finetune images = the training part (60 %), one epoch")
    stream = [r for r in rows if r["case"].endswith("stream")]
    ok = all(r["peak_beyond_model_gib"] < 2.0 for r in stream)
    print(f"streamed cases under 2 GiB beyond the model: {'yes' if ok else 'NO'}")
    from _results import write_json

    write_json(args.out, {"model": MODEL, "n_generated": args.n, "batch_size": args.batch_size,
                          "num_workers": args.num_workers, "cpus": os.cpu_count(),
                          "limit_seconds": args.limit_seconds, "rows": rows,
                          "stream_under_2gib": ok, "command": " ".join(sys.argv),
                          "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
