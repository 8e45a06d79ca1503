"""Do the verdict's 95 % intervals hold their level? Coverage of 3-seed intervals on real runs.

    python examples/digits_transfer.py --out /tmp/digits        # the data and the sources
    python bench/coverage.py --dir /tmp/digits --source true [--seeds 20] [--draws 1140]

Trains ``--seeds`` seeds of each arm (transfer from the source vs the same LeNet from scratch,
the default budget floor and augmentation, the learning-rate grid ``--lr-grid``, the given test
set; both arms through ``finetune``, runs kept in an SQLite store beside the results so an
interrupted bench resumes), then draws 3-seed subsets (every one of the C(20, 3) = 1140 by
default) and counts how often each subset's 95 % interval of the gain contains the all-seeds
gain:

- ``t``: :func:`transferscope.verdict.paired_gain` (t interval, test-sample and seed levels,
  Satterthwaite degrees of freedom), what the verdict uses now;
- ``bootstrap``: the two-level percentile bootstrap the verdict used before (seeds and test
  samples resampled together, 2000 draws), for comparison.

Also with ``--test-subset N`` test samples drawn per subset (the all-seeds gain stays on the
whole test set), which adds the test-sample level. Prints a table and writes
bench/results/coverage_<source>.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
from _results import write_json

HERE = Path(__file__).resolve().parent


def bootstrap_gain(t, s, n_boot=2000, seed=0, level=0.95):
    """The verdict's previous interval: percentile bootstrap over seeds and test samples."""
    diff = np.asarray(t, float) - np.asarray(s, float)
    rng = np.random.default_rng(seed)
    k, n = diff.shape
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    per_seed = counts @ diff.T / n
    pick = rng.integers(0, k, (n_boot, k))
    boot = np.take_along_axis(per_seed, pick, axis=1).mean(axis=1)
    return tuple(np.percentile(boot, [50 * (1 - level), 50 * (1 + level)]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/digits")
    ap.add_argument("--source", default="true", choices=("true", "shuffled"))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--subset", type=int, default=3)
    ap.add_argument("--draws", type=int, default=1140)
    ap.add_argument("--test-subset", type=int, default=200)
    ap.add_argument("--lr-grid", default="1,3,10,30",
                    help="learning-rate multipliers (default: the grid on which neither arm of "
                         "the digits cases chooses an edge)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent / "src"))
    from transferscope.data import load_dataset
    from transferscope.finetune import TrainConfig, finetune
    from transferscope.store import open_store
    from transferscope.verdict import paired_gain, stack_correctness

    d = Path(args.dir)
    data = load_dataset(str(d / "target_train.npz"))
    test = load_dataset(str(d / "target_test.npz"))
    weights = d / f"lenet_{args.source}.safetensors"
    model = f"torch:{HERE.parent / 'examples' / 'lenet.py'}:lenet@{weights}"
    out = HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    store = open_store(f"sqlite:///{out / f'coverage_{args.source}.db'}")
    grid = tuple(float(m) for m in args.lr_grid.split(","))
    res = finetune(data, model, "full", seeds=args.seeds, layer="10", test_data=test,
                   store=store, config=TrainConfig(lr_grid=grid))
    runs = {arm: {} for arm in ("transfer", "scratch")}
    for r in store.list(state="finished"):
        arm = (r["tags"] or {}).get("arm")
        if arm in runs and r["seed"] < args.seeds:
            runs[arm][r["seed"]] = r["metrics"]
    t = stack_correctness([[runs["transfer"][s]] for s in range(args.seeds)])
    b = stack_correctness([[runs["scratch"][s]] for s in range(args.seeds)])
    truth = float((t - b).mean())
    subsets = list(itertools.combinations(range(args.seeds), args.subset))
    rng = np.random.default_rng(0)
    if len(subsets) > args.draws:
        subsets = [subsets[i] for i in rng.choice(len(subsets), args.draws, replace=False)]
    rows = []
    for test_n in (t.shape[1], args.test_subset):
        hit_t = hit_b = 0
        widths_t, widths_b, verdicts = [], [], []
        for i, sub in enumerate(subsets):
            cols = (np.arange(t.shape[1]) if test_n == t.shape[1]
                    else rng.choice(t.shape[1], test_n, replace=False))
            ts, bs = t[list(sub)][:, cols], b[list(sub)][:, cols]
            g = paired_gain(ts, bs)
            lo, hi = bootstrap_gain(ts, bs, seed=i)
            hit_t += g.low <= truth <= g.high
            hit_b += lo <= truth <= hi
            widths_t.append(g.high - g.low)
            widths_b.append(hi - lo)
            verdicts.append("POS" if g.low > 0 else "NEG" if g.high < 0 else "INC")
        n = len(subsets)
        rows.append({"test_samples": int(test_n), "subsets": n,
                     "coverage_t": hit_t / n, "coverage_bootstrap": hit_b / n,
                     "width_t": float(np.median(widths_t)),
                     "width_bootstrap": float(np.median(widths_b)),
                     "verdicts_t": {v: verdicts.count(v) for v in ("POS", "NEG", "INC")}})
    per_seed = (t - b).mean(axis=1)
    print(f"source {args.source}: {args.seeds}-seed gain {truth:+.4f} (per-seed sd "
          f"{per_seed.std(ddof=1):.4f}); the {args.seeds}-seed verdict {res.verdict} "
          f"[{res.gain.low:+.4f}, {res.gain.high:+.4f}]")
    print(f"{'test n':>7} {'subsets':>7} {'cover t':>8} {'cover boot':>10} {'width t':>8} "
          f"{'width boot':>10}  verdicts (t)")
    for r in rows:
        print(f"{r['test_samples']:>7} {r['subsets']:>7} {r['coverage_t']:>8.3f} "
              f"{r['coverage_bootstrap']:>10.3f} {r['width_t']:>8.4f} "
              f"{r['width_bootstrap']:>10.4f}  {r['verdicts_t']}")
    write_json(out / f"coverage_{args.source}.json",
               {"source": args.source, "seeds": args.seeds, "subset": args.subset,
                "truth": truth, "per_seed_gain": per_seed.tolist(),
                "transfer_acc": t.mean(axis=1).tolist(), "scratch_acc": b.mean(axis=1).tolist(),
                "verdict_all_seeds": res.verdict,
                "gain_all_seeds": list(res.gain), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
