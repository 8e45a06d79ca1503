"""Benchmark every metric at the reference sizes S1-S4, beside the reference timings.

    python bench/metrics.py --sizes S1,S2,S3,S4 [--metrics logme,hscore] [--timeout 300]

Inputs come from the team's reference generator (``../shared/reference/datagen.py``, cached as
.npy under ``--cache``); each (metric, size) runs in its own process (so a slow one can be cut off
at ``--timeout`` and peak memory is per metric), imports are warmed up first, and the time is the
best of up to 3 calls (only 1 when a call takes over 30 s), as in the reference protocol.
Reference times are read from ``../shared/reference/README.md`` (quiet-machine figures; those
marked with a dagger come from a loaded machine and are upper bounds). Prints a table and writes
``bench/results/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "reference"

# our metric (with options) -> the reference implementation it is compared with
CASES = {
    "logme": ("logme", {}, "logme.thuml"),
    "logme-f32": ("logme", {"gram_dtype": "float32"}, "logme.thuml"),
    "leep": ("leep", {}, "leep.thuml"),
    "nce": ("nce", {}, "nce.thuml"),
    "hscore": ("hscore", {}, "hscore.tllib"),
    "hscore_reg": ("hscore_reg", {}, "hscore_reg.tllib"),
    "transrate": ("transrate", {}, "transrate.official"),
    "gbc-diagonal": ("gbc", {"gaussian_type": "diagonal"}, "gbc.diagonal"),
    "gbc-spherical": ("gbc", {"gaussian_type": "spherical"}, "gbc.spherical"),
    "sfda": ("sfda", {}, "sfda.sfda"),
    "nleep": ("nleep", {"log": False}, "nleep.sfda"),
    "parc": ("parc", {}, "parc.official"),
    "knn": ("knn", {}, None),
    "linear_probe": ("linear_probe", {}, None),
}


def reference_times(readme: Path) -> dict:
    """{(reference, size): (seconds or None, cell text)} from the README's timing table."""
    out = {}
    sizes = ["S1", "S2", "S3", "S4"]
    for line in readme.read_text().splitlines():
        m = re.match(r"\|\s*`([\w.]+)`\s*\|(.*)\|\s*$", line)
        if not m:
            continue
        cells = [c.strip() for c in m.group(2).split("|")]
        if len(cells) != 4 or not re.search(r"\d|skipped", cells[0] + cells[1]):
            continue
        for size, cell in zip(sizes, cells, strict=True):
            num = re.match(r"^([\d.]+)", cell)
            if (m.group(1), size) not in out:
                out[(m.group(1), size)] = (float(num.group(1)) if num else None, cell)
    return out


def reference_values() -> dict:
    vals = {}
    for name in ("reference_results.json", "reference_results_S1_smoke.json"):
        path = SHARED / name
        if path.exists():
            for key, res in json.loads(path.read_text())["results"].items():
                value = (res.get("output") or {}).get("value")
                if value is not None:
                    vals.setdefault(key, value)
    return vals


def child(case: str, size: str, cache: str) -> dict:
    import numpy as np

    sys.path.insert(0, str(SHARED))
    import datagen  # the team's reference input generator

    from transferscope.metrics import score

    name, options, _ = CASES[case]
    t0 = time.perf_counter()
    x, y, p, meta = datagen.load_or_make(size, cache)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)  # warm-up: imports, thread pools, torch
    score(name, rng.standard_normal((60, 8)), np.arange(60) % 3,
          source_probs=np.full((60, 4), 0.25), **options)
    if name == "nce":  # the reference protocol hands NCE the hard source labels argmax P
        p = p.argmax(axis=1)
    times, value = [], None
    for _ in range(3):
        start = time.perf_counter()
        value = score(name, x, y, source_probs=p, **options)
        times.append(time.perf_counter() - start)
        if times[-1] > 30:
            break
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (Linux: KiB)
    return {"case": case, "size": size, "value": value, "times_s": times,
            "best_s": min(times), "load_s": load_s, "peak_rss_gib": peak,
            "input_sha": {k: meta[k] for k in ("sha_X", "sha_y", "sha_P")}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="S1,S2")
    ap.add_argument("--metrics", default=",".join(CASES))
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--cache", default=os.environ.get("TSCOPE_BENCH_CACHE",
                                                      "/tmp/transferscope-bench-cache"))
    ap.add_argument("--out", default=str(HERE / "results" / "metrics.json"))
    ap.add_argument("--child", nargs=2, metavar=("CASE", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.cache)))
        return 0
    if not (SHARED / "datagen.py").exists():
        print(f"bench/metrics.py needs the reference inputs at {SHARED}", file=sys.stderr)
        return 2
    ref_t = reference_times(SHARED / "README.md")
    ref_v = reference_values()
    rows = []
    header = (f"{'metric':14s} {'size':4s} {'ours_s':>9s} {'ref_s':>18s} {'speedup':>8s} "
              f"{'peak_GiB':>8s} {'value':>14s} {'rel_diff_vs_ref':>15s}")
    print(header)
    print("-" * len(header))
    for size in args.sizes.split(","):
        for case in args.metrics.split(","):
            _, _, ref = CASES[case]
            cmd = [sys.executable, __file__, "--child", case, size, "--cache", args.cache]
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                     check=False)
                if res.returncode != 0:
                    row = {"case": case, "size": size, "status": "error",
                           "error": res.stderr.strip().splitlines()[-1:]}
                else:
                    row = dict(json.loads(res.stdout.strip().splitlines()[-1]), status="ok")
            except subprocess.TimeoutExpired:
                row = {"case": case, "size": size, "status": f"timeout {args.timeout:.0f}s"}
            ref_s, ref_cell = ref_t.get((ref, size), (None, "")) if ref else (None, "")
            row["reference"] = ref
            row["reference_s"] = ref_s
            row["reference_cell"] = ref_cell
            ours = row.get("best_s")
            row["speedup"] = (ref_s / ours) if (ours and ref_s) else None
            rv = ref_v.get(f"{ref}|{size}") if ref else None
            row["reference_value"] = rv
            val = row.get("value")
            row["rel_diff"] = abs(val / rv - 1) if (rv and val is not None) else None
            rows.append(row)
            speed = f"{row['speedup']:.1f}x" if row["speedup"] else ""
            if ref_cell.startswith(">") and ours:
                speed = f">{300 / ours:.0f}x"
            ours_txt = f"{ours:.3f}" if ours else row["status"]
            peak_txt = f"{row['peak_rss_gib']:.2f}" if ours else ""
            val_txt = f"{val:.6g}" if val is not None else ""
            diff_txt = f"{row['rel_diff']:.1e}" if row["rel_diff"] is not None else ""
            print(f"{case:14s} {size:4s} {ours_txt:>9s} {ref_cell[:18]:>18s} {speed:>8s} "
                  f"{peak_txt:>8s} {val_txt:>14s} {diff_txt:>15s}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                               "nproc": os.cpu_count()}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
