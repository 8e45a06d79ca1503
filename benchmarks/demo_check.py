"""Measure what the demo's text case predicts: fine-tune a candidate on the demo's own target
against the same architecture from scratch, under the text benchmark's protocol.

    python benchmarks/demo_check.py                   # zoo:bert-shuffled, full: ~5 min, 2 cores
    python benchmarks/demo_check.py --model minilm    # slow on a CPU (about 20 min a run)
    python benchmarks/demo_check.py --lr-grid 0.1,1,10,100   # the grid widened: ~10 min

The target is the one ``tscope demo`` advises on: fortunes, 6 categories, 30 per class (the
same seeded subsample); the test set is up to 150 other entries of each category. The runs
(3 seeds per arm, at least 500 steps, learning rate x1 / x10 chosen on validation, the scratch
arm also at twice the budget) go to a store in ``--out``, so an interrupted check resumes.
Prints ``tscope finetune``'s table and verdict.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np

#: The demo's text case (transferscope.cli.DEMO_CASES): dataset, samples per class, seed.
DATASET, PER_CLASS, SEED = "fortunes", 30, 0
TEST_PER_CLASS = 150


def write_split(out: Path) -> tuple[Path, Path]:
    """``train.csv`` (the demo's subsample) and ``test.csv`` (up to :data:`TEST_PER_CLASS`
    other entries per category, seeded) in ``out``."""
    from transferscope.data import load_dataset, subsample

    full = load_dataset(DATASET)
    train = subsample(full, per_class=PER_CLASS, seed=SEED)
    seen = set(map(str, train.inputs))
    texts, labels = list(map(str, full.inputs)), [str(v) for v in np.asarray(full.labels)]
    rng = np.random.default_rng(SEED + 1)
    test = []
    for c in sorted(set(labels)):
        idx = [i for i, (t, v) in enumerate(zip(texts, labels, strict=True))
               if v == c and t not in seen]
        test += [idx[i] for i in rng.permutation(len(idx))[:TEST_PER_CLASS]]
    paths = out / "train.csv", out / "test.csv"
    for path, rows in ((paths[0], zip(map(str, train.inputs),
                                      [str(v) for v in np.asarray(train.labels)], strict=True)),
                       (paths[1], ((texts[i], labels[i]) for i in test))):
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(rows)
    return paths


def main(argv=None) -> int:
    """Write the split, then run ``tscope finetune`` on it (see the module docstring)."""
    from transferscope import cli

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zoo:bert-shuffled",
                    help="a demo model name (zoo:..., minilm) or any model name")
    ap.add_argument("--strategy", default="full")
    ap.add_argument("--lr-grid", default="1,10",
                    help="learning-rate multipliers, both arms (default %(default)s: the text "
                         "benchmark's)")
    ap.add_argument("--out", help="folder for the split and the run store (default: a new "
                                  "temporary one)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="tscope-demo-check-"))
    out.mkdir(parents=True, exist_ok=True)
    train, test = write_split(out)
    return cli.main(["finetune", "--data", str(train), "--test-data", str(test),
                     "--model", cli._resolve_demo_model(args.model),
                     "--strategy", args.strategy, "--epochs", "30", "--batch-size", "16",
                     "--patience", "8", "--lr-grid", args.lr_grid, "--check-budget",
                     "--db", f"sqlite:///{out / 'runs.db'}"])


if __name__ == "__main__":
    raise SystemExit(main())
