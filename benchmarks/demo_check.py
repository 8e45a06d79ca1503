"""Measure what the demo predicts: fine-tune a candidate on the demo's own target against the
same architecture from scratch, under the benchmark's protocol.

    python benchmarks/demo_check.py                   # text, zoo:bert-shuffled: ~5 min, 2 cores
    python benchmarks/demo_check.py --lr-grid 0.1,1,10,100   # the grid widened: ~8 min
    python benchmarks/demo_check.py --case images     # zoo:lenet-relabelled: ~1 min
    python benchmarks/demo_check.py --case images --model effnet-lite:0@32   # ~30 min
    python benchmarks/demo_check.py --model minilm    # slow on a CPU (about 20 min a run)

The target is the one ``tscope demo`` advises on (:data:`transferscope.cli.DEMO_CASES`: the
same dataset and seeded subsample, 30 per class); the test set is up to 150 other samples of
each class. The runs (3 seeds per arm, at least 500 steps, the learning rate chosen on
validation from ``--lr-grid``, the scratch arm also at twice the budget) go to a store in
``--out``, so an interrupted check resumes. Prints ``tscope finetune``'s table and verdict.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np

SEED = 0  # the demo's default --seed
TEST_PER_CLASS = 150
#: per case: the model checked by default
DEFAULT_MODEL = {"images": "zoo:lenet-relabelled", "text": "zoo:bert-shuffled"}


def demo_case(case: str) -> tuple[str, int]:
    """The dataset and samples per class of the demo's ``case`` (``images`` or ``text``)."""
    from transferscope.cli import DEMO_CASES

    for title, dataset, _, per_class in DEMO_CASES:
        if title.startswith(f"{case}:"):
            return dataset, per_class
    raise SystemExit(f"expected a demo case among "
                     f"{', '.join(t.split(':')[0] for t, *_ in DEMO_CASES)}, got {case!r}")


def write_split(out: Path, case: str = "text") -> tuple[Path, Path]:
    """The demo's training subsample and a test set of up to :data:`TEST_PER_CLASS` other
    samples per class (seeded), written to ``out``: ``train.csv`` / ``test.csv`` (text:
    ``text`` and ``label`` columns) or ``train.npz`` / ``test.npz`` (images: ``X`` of shape
    (n, C, H, W), ``y``)."""
    from transferscope.data import load_dataset
    from transferscope.data.splits import subsample_indices

    dataset, per_class = demo_case(case)
    full = load_dataset(dataset)
    labels = np.asarray(full.labels)
    train = subsample_indices(labels, per_class=per_class, seed=SEED)
    rest = np.setdiff1d(np.arange(len(labels)), train)
    if full.kind == "text":  # an entry that is also in the training part stays out of test
        seen = {str(full.inputs[i]) for i in train}
        rest = np.array([i for i in rest if str(full.inputs[i]) not in seen], int)
    rng = np.random.default_rng(SEED + 1)
    test = np.concatenate([rng.permutation(rest[labels[rest] == c])[:TEST_PER_CLASS]
                           for c in np.unique(labels)])
    paths = []
    for name, idx in (("train", train), ("test", test)):
        if full.kind == "text":
            path = out / f"{name}.csv"
            with path.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["text", "label"])
                w.writerows((str(full.inputs[i]), str(labels[i])) for i in idx)
        else:
            path = out / f"{name}.npz"
            x = np.asarray(full.inputs)[idx]
            # grey (n, H, W) images as (n, 1, H, W): an .npz of 3-D arrays reads as series
            np.savez(path, X=x[:, None] if x.ndim == 3 else x, y=labels[idx])
        paths.append(path)
    return paths[0], paths[1]


def main(argv=None) -> int:
    """Write the split, then run ``tscope finetune`` on it (see the module docstring)."""
    from transferscope import cli

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="text", choices=sorted(DEFAULT_MODEL),
                    help="which of the demo's cases to check (default %(default)s)")
    ap.add_argument("--model", help="a demo model name (zoo:..., minilm) or any model name "
                                    "(default: the case's shuffled-label source)")
    ap.add_argument("--strategy", default="full",
                    help="the fine-tuning strategy of the transfer arm (default %(default)s: "
                         "what the advisor recommends for the demo's candidates)")
    ap.add_argument("--lr-grid", default="1,10",
                    help="learning-rate multipliers, both arms (default %(default)s: the text "
                         "benchmark's)")
    ap.add_argument("--out", help="folder for the split and the run store (default: a new "
                                  "temporary one)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="tscope-demo-check-"))
    out.mkdir(parents=True, exist_ok=True)
    train, test = write_split(out, args.case)
    model = cli._resolve_demo_model(args.model or DEFAULT_MODEL[args.case])
    return cli.main(["finetune", "--data", str(train), "--test-data", str(test),
                     "--model", model, "--strategy", args.strategy, "--epochs", "30",
                     "--batch-size", "16", "--patience", "8", "--lr-grid", args.lr_grid,
                     "--check-budget", "--db", f"sqlite:///{out / 'runs.db'}"])


if __name__ == "__main__":
    raise SystemExit(main())
