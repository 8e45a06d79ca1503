"""Benchmark every metric at the reference sizes S1-S4 (and R, D > N), beside the reference timings.

    python bench/metrics.py --sizes S1,S2,S3,S4,R [--metrics logme,hscore] [--timeout 300]
                            [--base /tmp/main-src]

Inputs come from the team's reference generator (``../shared/reference/datagen.py``, cached as
.npy under ``--cache``); size R (N=400, D=3072, C=10: raw-input-like, D > N) is made by the same
generator's ``make_inputs``. Each (metric, size) runs in its own process (so a slow one can be cut
off at ``--timeout`` and peak memory, ``ru_maxrss`` of that process, is per metric), imports are
warmed up first, and the time is the best of up to 3 calls (only 1 when a call takes over 30 s),
as in the reference protocol. Reference times are read from ``../shared/reference/README.md``
(quiet-machine figures; those marked with a dagger come from a loaded machine and are upper
bounds): they come from another machine, so their ``speedup`` column only gives the scale.

Ratios measured in one run: ``--base DIR`` runs every case a second time, right after the first,
with the package imported from ``DIR/src`` (e.g. ``git archive main src | tar -x -C DIR``: the
code before a change) and prints ``x_base`` = base time / our time. Where the README has a
same-day ratio of main (default options) to a reference implementation (its table "reference /
transferscope"), ``x_ref`` = that ratio x (base time of the metric's default case) / our time:
the ratio to the reference implementation itself, derived through the base code measured side
by side (valid when DIR holds the main the README measured; list the default case first, e.g.
``--metrics logme,logme-f32,logme-f64``). Prints a table and writes
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
    "logme-f64": ("logme", {"gram_dtype": "float64"}, "logme.thuml"),
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


# sizes beyond the reference generator's own: name -> make_inputs arguments
EXTRA_SIZES = {"R": {"N": 400, "D": 3072, "C": 10}}

# the README's same-day ratio table (main's default options vs the reference): row -> metric
RATIO_ROWS = {"LogME": "logme", "H-score": "hscore", "shrinkage H-score": "hscore_reg",
              "TransRate": "transrate", "SFDA": "sfda", "LEEP": "leep", "NCE": "nce"}


def same_day_ratios(readme: Path) -> dict:
    """{(metric, size): ratio} from the README's "reference / transferscope" table."""
    out = {}
    for line in readme.read_text().splitlines():
        m = re.match(r"\|\s*([\w -]+?)\s*\(([^)]*)\)\s*\|(.*)\|\s*$", line)
        if not m or m.group(1) not in RATIO_ROWS:
            continue
        cells = [c.strip() for c in m.group(3).split("|")]
        if len(cells) != 3:
            continue
        for size, cell in zip(("S2", "S3", "S4"), cells, strict=True):
            num = re.match(r"^([\d.]+)x$", cell)
            if num:
                out[(RATIO_ROWS[m.group(1)], size)] = float(num.group(1))
    return out


def load_inputs(size: str, cache: str):
    """(X, y, P, meta) of a reference size, or of an extra size made by the same generator."""
    import numpy as np

    sys.path.insert(0, str(SHARED))
    import datagen  # the team's reference input generator

    if size in datagen.SIZES:
        return datagen.load_or_make(size, cache)
    p = dict(datagen.DEFAULTS, **EXTRA_SIZES[size])
    path = Path(cache) / f"{size}_N{p['N']}_D{p['D']}_C{p['C']}_seed{p['seed']}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        x, y, pr = datagen.make_inputs(p["N"], p["D"], p["C"], Cs=p["Cs"],
                                       separability=p["separability"],
                                       spectrum_decay=p["spectrum_decay"],
                                       logit_scale=p["logit_scale"], seed=p["seed"])
        np.savez(path, X=x, y=y, P=pr)
    with np.load(path) as f:
        x, y, pr = f["X"], f["y"], f["P"]
    meta = dict(p, size=size, sha_X=datagen._sha(x), sha_y=datagen._sha(y), sha_P=datagen._sha(pr))
    return x, y, pr, meta


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

    import transferscope
    from transferscope.metrics import score

    name, options, _ = CASES[case]
    t0 = time.perf_counter()
    x, y, p, meta = load_inputs(size, cache)
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
            "package": str(Path(transferscope.__file__).parent),
            "input_sha": {k: meta[k] for k in ("sha_X", "sha_y", "sha_P")}}


def run_child(case: str, size: str, args, src: str | None = None) -> dict:
    """One (case, size) in its own process; ``src``: import the package from there."""
    cmd = [sys.executable, __file__, "--child", case, size, "--cache", args.cache]
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                             check=False, env=env)
        if res.returncode != 0:
            return {"case": case, "size": size, "status": "error",
                    "error": res.stderr.strip().splitlines()[-1:]}
        return dict(json.loads(res.stdout.strip().splitlines()[-1]), status="ok")
    except subprocess.TimeoutExpired:
        return {"case": case, "size": size, "status": f"timeout {args.timeout:.0f}s"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="S1,S2")
    ap.add_argument("--metrics", default=",".join(CASES))
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--cache", default=os.environ.get("TSCOPE_BENCH_CACHE",
                                                      "/tmp/transferscope-bench-cache"))
    ap.add_argument("--out", default=str(HERE / "results" / "metrics.json"))
    ap.add_argument("--base", help="also time every case with the package from BASE/src")
    ap.add_argument("--child", nargs=2, metavar=("CASE", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.cache)))
        return 0
    if not (SHARED / "datagen.py").exists():
        print(f"bench/metrics.py needs the reference inputs at {SHARED}", file=sys.stderr)
        return 2
    ref_t = reference_times(SHARED / "README.md")
    ratios = same_day_ratios(SHARED / "README.md")
    ref_v = reference_values()
    base_src = str(Path(args.base).resolve() / "src") if args.base else None
    rows, base_times = [], {}
    header = (f"{'metric':14s} {'size':4s} {'ours_s':>9s} {'peak_GiB':>8s} {'base_s':>9s} "
              f"{'base_GiB':>8s} {'x_base':>7s} {'x_ref':>7s} {'ref_s':>14s} {'speedup':>8s} "
              f"{'value':>14s} {'rel_diff_vs_ref':>15s}")
    print(header)
    print("-" * len(header))
    for size in args.sizes.split(","):
        for case in args.metrics.split(","):
            _, _, ref = CASES[case]
            row = run_child(case, size, args)
            base = run_child(case, size, args, base_src) if base_src else {}
            ref_s, ref_cell = ref_t.get((ref, size), (None, "")) if ref else (None, "")
            row["reference"] = ref
            row["reference_s"] = ref_s
            row["reference_cell"] = ref_cell
            ours = row.get("best_s")
            row["speedup"] = (ref_s / ours) if (ours and ref_s) else None
            row["base"] = base or None
            base_s = base.get("best_s")
            row["x_base"] = (base_s / ours) if (ours and base_s) else None
            # the README's ratio is for main's default options: derive through the base
            # time of this metric's default case (run earlier in this invocation)
            metric_name = CASES[case][0]
            day = ratios.get((metric_name, size))
            base_default = base_s if case == metric_name else base_times.get((metric_name, size))
            row["same_day_ratio"] = day
            row["base_default_s"] = base_default
            row["x_ref_derived"] = (day * base_default / ours
                                    if (day and base_default and ours) else None)
            if base_s:
                base_times[(case, size)] = base_s
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
            base_txt = f"{base_s:.3f}" if base_s else base.get("status", "")
            bpeak_txt = f"{base['peak_rss_gib']:.2f}" if base_s else ""
            xb_txt = f"{row['x_base']:.2f}" if row["x_base"] else ""
            xr_txt = f"{row['x_ref_derived']:.1f}x" if row["x_ref_derived"] else ""
            val_txt = f"{val:.6g}" if val is not None else ""
            diff_txt = f"{row['rel_diff']:.1e}" if row["rel_diff"] is not None else ""
            print(f"{case:14s} {size:4s} {ours_txt:>9s} {peak_txt:>8s} {base_txt[:9]:>9s} "
                  f"{bpeak_txt:>8s} {xb_txt:>7s} {xr_txt:>7s} {ref_cell[:14]:>14s} {speed:>8s} "
                  f"{val_txt:>14s} {diff_txt:>15s}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                               "nproc": os.cpu_count()}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
