"""Turn the benchmark studies' finished runs into measured truth, saved as JSON.

    python benchmarks/build.py --run --jobs 2   # data, studies, truth: the one command
    python benchmarks/build.py                  # truth of every part from what has finished
    python benchmarks/build.py images           # one part

A part whose store holds no finished pair (a fresh clone) keeps its saved JSON (and one that
has none yet gets none); so does one whose store has fewer complete (pair, size) cells than
the saved JSON (a rerun under way), unless ``--replace``.

then it refits the advisor shipped with the package (``src/transferscope/advise/advisor.json``)
on every saved part of ``bench_parts.PARTS`` (not the ``MEASURED_ONLY`` ones) and writes its
leave-one-target-out evaluation, beside every single metric's, to
``results/advisor_loto.json`` (:mod:`transferscope.advise.evaluation`).

Each part is a study spec (``benchmarks/<part>.toml``); run it first with
``tscope study run benchmarks/<part>.toml`` (resumable: what has finished is kept). This
script reads the study's store alone (no model is loaded) through
:func:`transferscope.study.evaluate.study_records` (on
:func:`transferscope.study.evaluate.collect`: the numbers ``tscope study evaluate`` and
``tscope finetune`` give) and writes one record per (source, target) pair:

- ``scores``: each metric for the source, its random-init twin and the raw input
  (``{metric: {"value", "random", "raw"}}``), the source's feature width ``dim`` and the
  rank risk label;
- ``truth``: per data size (``fraction``), the scratch arm's test accuracy and, per strategy,
  the transfer arm's test accuracy, the gain over scratch with its 95 % interval, the verdict
  (POSITIVE / NEGATIVE / INCONCLUSIVE), the minimum detectable effect and the reading; then
  ``best_strategy`` (highest transfer accuracy), ``best_acc`` (the fine-tuned accuracy),
  ``lp_acc`` (the linear probe's), ``beats_scratch`` (the best strategy's gain > 0) and
  ``verdict`` (the best strategy's);
- ``target``: samples per class in the training part at that size and classes.

The file also states the spec's hash, the commit, how many runs the grid has and how many
have finished (a part may be partial: only pairs whose every seed has finished in both arms
are written), and the CPU time the finished runs took (sum of their training wall times, one
thread each).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from bench_parts import ALL_PARTS, MODALITY, PARTS, make_store

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build(part: str) -> dict:
    """The truth of one benchmark part from its study's store (see the module docstring)."""
    from transferscope.store import open_store
    from transferscope.study import load_spec
    from transferscope.study.evaluate import study_records
    from transferscope.study.runner import study_status

    path = HERE / f"{part}.toml"
    spec = load_spec(path)
    store = open_store(spec.db)
    records = study_records(spec, store, MODALITY.get(part, part))
    if not records:  # e.g. a fresh clone: nothing to write (the run counts need the data)
        return {"benchmark": part, "pairs": []}
    runs = store.list(study=spec.name, state="finished")
    cpu = sum(float((r.get("timings") or {}).get("train_s") or 0.0) for r in runs)
    status = study_status(spec)
    return {"benchmark": part, "spec": str(path.relative_to(ROOT)),
            "spec_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "commit": _commit(),
            "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "runs": {k: v for k, v in status.items() if isinstance(v, dict)},
            "cpu_seconds": round(cpu, 1), "metrics": list(spec.metrics),
            "strategies": list(spec.strategies), "fractions": list(spec.fractions),
            "pairs": records}


def fit_shipped(parts=PARTS) -> dict:
    """Fit the advisor on every part's saved records (``PARTS``: the ``MEASURED_ONLY`` ones are
    built and shown, not fitted on), write it where the package ships it
    (``src/transferscope/advise/advisor.json``), and write its leave-one-target-out
    evaluation against every single metric to ``benchmarks/results/advisor_loto.json``."""
    from transferscope.advise.evaluation import evaluate_advice
    from transferscope.advise.model import SHIPPED, fit_advisor

    records, sources = [], []
    for part in parts:
        path = HERE / "results" / f"{part}.json"
        if path.exists():
            records += json.loads(path.read_text())["pairs"]
            sources.append(str(path.relative_to(ROOT)))
    from transferscope.study import load_spec

    widths = {load_spec(HERE / f"{part}.toml").width for part in parts}
    if len(widths) != 1:
        raise SystemExit(f"the benchmark's parts are scored at different widths: {widths}")
    adv = fit_advisor(records, source="benchmark: " + ", ".join(sources), width=widths.pop())
    loto = evaluate_advice(records)
    adv.attach_held_out(loto["by_modality"])  # advise says how far to trust it per modality
    adv.to_json(SHIPPED)
    (HERE / "results" / "advisor_loto.json").write_text(
        json.dumps({"trained_on": adv.trained_on, **loto}, indent=1) + "\n")
    return loto


def _complete_cells(res: dict) -> int:
    """(pair, size) cells of a part's truth whose every seed finished in both arms."""
    return sum(1 for p in res["pairs"] for s in p["truth"].values() if s["complete"])


def main(argv=None) -> int:
    """Write ``benchmarks/results/<part>.json`` for each part asked for, then refit the
    shipped advisor on all saved parts and evaluate it leave-one-target-out."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="*",
                    help=f"parts among {', '.join(ALL_PARTS)} (default: all)")
    ap.add_argument("--run", action="store_true",
                    help="first build the data (make_data.py) and run the studies "
                         "(resumable: finished runs are kept)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel runs with --run")
    ap.add_argument("--replace", action="store_true",
                    help="write a part's truth even where its store has fewer complete cells "
                         "than the saved JSON (default: keep the saved one)")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.parts) - set(ALL_PARTS))
    if unknown:
        ap.error(f"expected parts among {', '.join(ALL_PARTS)}, got {', '.join(unknown)}")
    os.chdir(ROOT)  # the specs' paths (data, stores) are relative to the repository root
    (HERE / "results").mkdir(exist_ok=True)
    make_store(ROOT)
    if args.run:
        from make_data import main as make_data

        from transferscope.study import load_spec, run_study

        make_data([])
        for part in args.parts or ALL_PARTS:
            summary = run_study(load_spec(HERE / f"{part}.toml"), jobs=args.jobs)
            failed = [f for s in summary.values() for f in s["failed"]]
            if failed:
                print(f"{part}: {len(failed)} runs failed, e.g. {failed[0]}", file=sys.stderr)
                return 1
    for part in args.parts or ALL_PARTS:
        dest = HERE / "results" / f"{part}.json"
        res = build(part)
        if not res["pairs"]:  # a fresh machine keeps what was measured; nothing yet: no file
            kept = f"kept {dest.relative_to(ROOT)}" if dest.exists() else "no truth yet"
            print(f"{part}: no finished pair in its store; {kept} (run its study to build "
                  "it)", file=sys.stderr)
            continue
        done = _complete_cells(res)
        if dest.exists() and not args.replace:
            saved = _complete_cells(json.loads(dest.read_text()))
            if done < saved:  # e.g. a rerun still under way: never lose measured truth
                print(f"{part}: its store has {done} complete (pair, size) cells, "
                      f"{dest.relative_to(ROOT)} {saved}; kept the saved file (finish the "
                      "study, or pass --replace to write the store's anyway)", file=sys.stderr)
                continue
        dest.write_text(json.dumps(res, indent=1, sort_keys=False) + "\n")
        print(f"{part}: {len(res['pairs'])} pairs ({done} complete (pair, size) cells), "
              f"{res['cpu_seconds'] / 3600:.2f} CPU hours -> {dest.relative_to(ROOT)}",
              file=sys.stderr)
    loto = fit_shipped()
    for row in loto["rows"]:
        print(f"{row['predictor']:>13}: tau_w {row['tau']:+.3f} [{row['tau_lo']:+.3f}, "
              f"{row['tau_hi']:+.3f}], top-1 regret {row['regret']:.3f} (median "
              f"{row['median_regret']:.3f}), NT F1 {row['f1']:.2f} "
              f"({row['nt_flagged']} flagged, {row['nt_actual']} negative)"
              + (f", Brier {row['brier']:.3f} [{row['brier_lo']:.3f}, {row['brier_hi']:.3f}]"
                 f" (of P(negative) {row['brier_negative']:.3f})"
                 f", ECE {row['ece']:.3f} [{row['ece_lo']:.3f}, {row['ece_hi']:.3f}] (calibrated "
                 f"{row['ece_calibrated']:.3f}, p {row['ece_p']:.2f}), "
                 f"strategy {row['strategy_acc']:.2f} vs always-LP "
                 f"{row['always_lp_acc']:.2f} / always-full {row['always_full_acc']:.2f} "
                 f"(difference {row['strategy_vs_full']:+.2f} [{row['strategy_vs_full_lo']:+.2f}"
                 f", {row['strategy_vs_full_hi']:+.2f}]; accuracy lost "
                 f"{row['strategy_regret']:.3f} vs always-full's "
                 f"{row['always_full_regret']:.3f}) / the layer rule "
                 f"{row['rule_acc']:.2f} (on {row['rule_examples']})" if "brier" in row
                 else ""),
              file=sys.stderr)
    for row in loto.get("by_modality", []):
        print(f"{row['modality']:>13}: {row['targets']} targets, {row['examples']} examples, "
              f"mean P(beats) {row['mean_p']:.2f} vs beat {row['beat_rate']:.2f}, Brier "
              f"{row['brier']:.3f}, ECE {row['ece']:.3f} (calibrated {row['ece_calibrated']:.3f},"
              f" p {row['ece_p']:.2f}), NT F1 {row['f1']:.2f} ({row['nt_flagged']} flagged, "
              f"{row['nt_actual']} negative)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
