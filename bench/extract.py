"""Feature-extraction overhead and cache speed.

    python bench/extract.py [--model effnet-lite:0] [--n 128] [--batch-size 32]

Three timings on the same model, data and batch size (best of ``--repeats``):
- bare: a hand-written loop (preprocess, forward under inference_mode, global-average pool);
- extract: ``extract_features`` with a cold cache (hooks, progress, cache write included);
- cache hit: ``extract_features`` again (read + SHA-256 verification, zero forward passes).
Targets: extract <= 1.10 x bare; cache hit >= 50 x faster than extract. Prints a table and
writes bench/results/extract.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_json

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="effnet-lite:0")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "extract.json"))
    args = ap.parse_args(argv)

    from transferscope.backends import create_backend
    from transferscope.data import load_dataset
    from transferscope.features import FeatureCache, extract_features

    data = load_dataset("sklearn:digits").subset(range(args.n))
    backend = create_backend(args.model)
    layer = backend.default_layer()
    module = backend.module.eval()
    named = dict(module.named_modules())

    def bare():
        out = []
        captured = {}
        h = named[layer].register_forward_hook(lambda m, i, o: captured.__setitem__("x", o))
        with torch.inference_mode():
            for s in range(0, len(data), args.batch_size):
                x = backend.prepare(data.inputs[s : s + args.batch_size], data)
                module(x)
                out.append(captured["x"].mean(dim=(2, 3)).numpy())
        h.remove()
        return np.concatenate(out)

    def best(fn, setup=None):
        times = []
        for _ in range(args.repeats):
            if setup:
                setup()
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    root = Path(tempfile.mkdtemp())
    cache = FeatureCache(root / "c")
    bare()  # warm-up
    t_bare = best(bare)
    t_extract = best(lambda: extract_features(backend, data, cache=cache,
                                              batch_size=args.batch_size, progress=False),
                     setup=lambda: shutil.rmtree(root / "c", ignore_errors=True))
    extract_features(backend, data, cache=cache, batch_size=args.batch_size, progress=False)
    t_hit = best(lambda: extract_features(backend, data, cache=cache,
                                          batch_size=args.batch_size, progress=False))
    same = np.allclose(bare(), extract_features(backend, data, cache=cache)[layer], rtol=1e-5)
    shutil.rmtree(root, ignore_errors=True)
    row = {"model": args.model, "n": args.n, "batch_size": args.batch_size, "layer": layer,
           "bare_s": t_bare, "extract_s": t_extract, "cache_hit_s": t_hit,
           "overhead": t_extract / t_bare - 1, "hit_speedup": t_extract / t_hit,
           "images_per_s": args.n / t_extract, "features_equal_bare": bool(same)}
    print(f"{'model':14s} {'n':>5s} {'bare s':>8s} {'extract s':>10s} {'overhead':>9s} "
          f"{'hit s':>8s} {'hit speed-up':>13s} {'img/s':>7s}")
    print(f"{args.model:14s} {args.n:5d} {t_bare:8.3f} {t_extract:10.3f} "
          f"{row['overhead']:+9.1%} {t_hit:8.4f} {row['hit_speedup']:12.0f}x "
          f"{row['images_per_s']:7.1f}   features equal: {same}")
    write_json(args.out, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
