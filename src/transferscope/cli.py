"""The ``tscope`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import sys

from transferscope import __version__
from transferscope.errors import InputError, OptionalDependencyError
from transferscope.io import load_features
from transferscope.metrics import list_metrics
from transferscope.report import FORMATS, render
from transferscope.scoring import DEFAULT_METRICS, all_metric_names, demo_inputs, score_many


def _parse_opt(text: str):
    if "=" not in text:
        raise InputError(f"Expected --opt KEY=VALUE, got {text!r}; e.g. --opt seed=1")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _metric_names(text: str) -> list[str]:
    if text == "all":
        return all_metric_names()
    return [m.strip() for m in text.split(",") if m.strip()]


def cmd_metrics(args) -> int:
    rows = [
        {
            "metric": m.name,
            "needs": m.needs,
            "description": m.summary,
            "options": ", ".join(f"{k}={v!r}" for k, v in m.options.items()),
            "reference": m.reference,
        }
        for m in sorted(list_metrics(), key=lambda m: m.name)
    ]
    print(render(rows, args.format))
    return 0


def cmd_score(args) -> int:
    features, labels, probs = load_features(
        args.features,
        features_key=args.features_key,
        labels_key=args.labels_key,
        probs_key=args.probs_key,
        labels_path=args.labels,
    )
    if labels is None:
        raise InputError(
            f"Expected labels, got none in {args.features}; pass --labels FILE or store them "
            "under 'labels' in the file"
        )
    options = dict(_parse_opt(o) for o in args.opt)
    rows = score_many(_metric_names(args.metric), features, labels, source_probs=probs,
                      options=options, on_error="raise")
    print(render(rows, args.format))
    return 0


def cmd_demo(args) -> int:
    models, labels = demo_inputs(seed=args.seed)
    metrics = _metric_names(args.metric)
    table = {m: {"metric": m} for m in metrics}
    for name, (features, probs) in models.items():
        for row in score_many(metrics, features, labels, source_probs=probs):
            table[row["metric"]][name] = row["value"]
    rows = list(table.values())
    if args.format == "table":
        print("Built-in example: scikit-learn digits (899 target samples, 10 classes) seen "
              "through three feature sets; every score should fall from 'pixels' to 'noise'.\n")
    print(render(rows, args.format))
    if args.format == "table":
        print("\nNext: score your own features with  tscope score FEATURES.npz --metric all")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tscope",
        description="transferscope: predict how well pretrained features transfer.",
    )
    parser.add_argument("--version", action="version", version=f"transferscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("metrics", help="list the transferability metrics")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("score", help="score a features file (npz/npy/csv/tsv/parquet)")
    p.add_argument("features", help="features file")
    p.add_argument("--labels", help="labels file (.npy or whitespace-separated text)")
    p.add_argument("--metric", default=",".join(DEFAULT_METRICS),
                   help="comma-separated metric names, or 'all' (default: %(default)s)")
    p.add_argument("--features-key", help="npz key, or column prefix, of the features")
    p.add_argument("--labels-key", help="npz key or column name of the labels")
    p.add_argument("--probs-key", default="probs",
                   help="npz key, or column prefix, of source probabilities (LEEP, NCE)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="metric option, e.g. --opt seed=1 (repeatable)")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("demo", help="score a built-in example (offline, seconds)")
    p.add_argument("--metric", default="all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, OptionalDependencyError) as exc:
        print(f"tscope: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
