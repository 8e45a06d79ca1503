"""Streaming LogME / H-scores on features larger than one wants in memory.

    python bench/streaming.py [--rows 1000000] [--dim 512] [--classes 100]

Writes (once) a float32 .npy of ``rows x dim`` class-structured features to ``--cache`` and
scores it through ``np.load(..., mmap_mode="r")`` with :func:`streaming_score`. Peak memory
*beyond the input's memmap* is the peak of the process's anonymous resident memory (RssAnon,
sampled every 5 ms; file-backed pages of the memmap are not in it). Also reports the peak total
RSS (VmHWM), which does include memmap pages the kernel kept resident. Prints a table and
writes bench/results/streaming.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
from _results import write_json

HERE = Path(__file__).resolve().parent


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class AnonPeak:
    """Poll RssAnon in a thread; ``peak`` in bytes."""

    def __init__(self, interval=0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def __enter__(self):
        self.base = _status_kib("RssAnon") * 1024
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kib("RssAnon") * 1024)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, _status_kib("RssAnon") * 1024)


def make_input(path: Path, rows: int, dim: int, classes: int, seed: int = 0):
    labels_path = path.with_suffix(".labels.npy")
    if path.exists() and labels_path.exists():
        return labels_path
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, dim)).astype(np.float32)
    y = rng.integers(0, classes, rows)
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+",
                                    dtype=np.float32, shape=(rows, dim))
    for start in range(0, rows, 65536):
        stop = min(rows, start + 65536)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32) * 3.0
        block += means[y[start:stop]] + 1.0
        out[start:stop] = block
    out.flush()
    del out
    os.replace(path.with_suffix(".tmp.npy"), path)
    np.save(labels_path, y)
    return labels_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--metrics", default="logme")
    ap.add_argument("--cache", default="/tmp/transferscope-bench-cache")
    ap.add_argument("--out", default=str(HERE / "results" / "streaming.json"))
    args = ap.parse_args(argv)

    from transferscope.metrics import streaming_score

    path = Path(args.cache) / f"stream_{args.rows}x{args.dim}_c{args.classes}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    labels_path = make_input(path, args.rows, args.dim, args.classes)
    features = np.load(path, mmap_mode="r")
    labels = np.load(labels_path)
    input_bytes = features.size * features.itemsize
    done = []
    with AnonPeak() as mem:
        start = time.perf_counter()
        scores = streaming_score(features, labels, metrics=args.metrics.split(","),
                                 progress=lambda d, t: done.append(d))
        seconds = time.perf_counter() - start
    row = {
        "rows": args.rows, "dim": args.dim, "classes": args.classes,
        "input_gib": input_bytes / 2**30, "seconds": seconds, "scores": scores,
        "anon_peak_gib": mem.peak / 2**30, "anon_before_gib": mem.base / 2**30,
        "anon_growth_gib": (mem.peak - mem.base) / 2**30,
        "vm_hwm_gib": _status_kib("VmHWM") / 2**20, "chunks": len(done),
    }
    print(f"{'input':>22s} {'GiB':>6s} {'seconds':>8s} {'anon peak GiB':>14s} "
          f"{'growth GiB':>11s} {'VmHWM GiB':>10s}  scores")
    print(f"{args.rows:>9d} x {args.dim:<4d} c{args.classes:<4d} {row['input_gib']:6.2f} "
          f"{seconds:8.2f} {row['anon_peak_gib']:14.3f} {row['anon_growth_gib']:11.3f} "
          f"{row['vm_hwm_gib']:10.2f}  {scores}")
    write_json(args.out, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
