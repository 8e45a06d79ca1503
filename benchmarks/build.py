"""Turn the benchmark studies' finished runs into measured truth, saved as JSON.

    python benchmarks/build.py                # every part (images, series) -> results/<part>.json
    python benchmarks/build.py images         # one part

Each part is a study spec (``benchmarks/<part>.toml``); run it first with
``tscope study run benchmarks/<part>.toml`` (resumable: what has finished is kept). This
script reads the study's store alone (no model is loaded) through
:func:`transferscope.study.evaluate.collect`, the numbers ``tscope study evaluate`` and
``tscope finetune`` give, and writes one record per (source, target) pair:

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
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PARTS = ("images", "series")
MODALITY = {"images": "image", "series": "series"}


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
    from transferscope.study.evaluate import collect
    from transferscope.study.runner import study_status

    path = HERE / f"{part}.toml"
    spec = load_spec(path)
    store = open_store(spec.db)
    rows = collect(spec, store)["pairs"]
    runs = {r["id"]: r for r in store.list(study=spec.name, state="finished")}
    status = study_status(spec)
    sizes = _target_sizes(spec, rows)
    pairs = defaultdict(lambda: {"truth": {}})
    for r in rows:
        rec = pairs[(r["target"], r["source"])]
        rec.update(target=r["target"], source=r["source"], modality=MODALITY.get(part, part))
        if "dim" in r:
            rec["scores"] = {m: {"value": r[m], "random": r.get(f"{m}_random"),
                                 "raw": r.get(f"{m}_raw")} for m in spec.metrics if m in r}
            rec["dim"], rec["risk"] = r["dim"], r.get("risk")
        size = rec["truth"].setdefault(str(r["fraction"]), {
            "scratch_acc": r["scratch_acc"], "strategies": {}, "seeds": r["seeds"],
            **sizes[(r["target"], r["fraction"])]})
        size["strategies"][r["strategy"]] = {
            k: r[k] for k in ("transfer_acc", "gain", "gain_lo", "gain_hi", "verdict", "mde",
                              "reading")}
    out = []
    for rec in pairs.values():
        for size in rec["truth"].values():
            strategies = size["strategies"]
            best = max(strategies, key=lambda s: strategies[s]["transfer_acc"])
            size.update(best_strategy=best, best_acc=strategies[best]["transfer_acc"],
                        lp_acc=strategies.get("linear_probe", {}).get("transfer_acc"),
                        beats_scratch=strategies[best]["gain"] > 0,
                        verdict=strategies[best]["verdict"],
                        complete=sorted(strategies) == sorted(spec.strategies))
        out.append(rec)
    cpu = sum(float((r.get("timings") or {}).get("train_s") or 0.0) for r in runs.values())
    return {"benchmark": part, "spec": str(path.relative_to(ROOT)),
            "spec_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "commit": _commit(),
            "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "runs": {k: status[k] for k in status if isinstance(status[k], dict)},
            "cpu_seconds": round(cpu, 1), "metrics": list(spec.metrics),
            "strategies": list(spec.strategies), "fractions": list(spec.fractions),
            "pairs": sorted(out, key=lambda p: (p["target"], p["source"]))}


def _target_sizes(spec, rows) -> dict:
    """(target, fraction) -> training samples per class at that fraction (the training part
    of the study's split of the target, times the fraction) and classes."""
    import numpy as np

    from transferscope.study.runner import _protocol

    out = {}
    for target, fraction in {(r["target"], r["fraction"]) for r in rows}:
        proto = _protocol(spec, target)
        split = proto["split"]
        share = split[0] / sum(split) if split else 1.0 - 1.0 / max(proto["folds"], 2)
        from transferscope.study.worker import target_data

        labels = np.asarray(target_data(target, spec.budgets.per_class).labels)
        classes = len(np.unique(labels))
        out[(target, fraction)] = {
            "per_class": round(len(labels) / classes * share * fraction, 1),
            "classes": classes}
    return out


def main(argv=None) -> int:
    """Write ``benchmarks/results/<part>.json`` for each part asked for."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="*", choices=PARTS, help="parts (default: all)")
    args = ap.parse_args(argv)
    (HERE / "results").mkdir(exist_ok=True)
    for part in args.parts or PARTS:
        res = build(part)
        dest = HERE / "results" / f"{part}.json"
        dest.write_text(json.dumps(res, indent=1, sort_keys=False) + "\n")
        done = sum(1 for p in res["pairs"] for s in p["truth"].values() if s["complete"])
        print(f"{part}: {len(res['pairs'])} pairs ({done} complete (pair, size) cells), "
              f"{res['cpu_seconds'] / 3600:.2f} CPU hours -> {dest.relative_to(ROOT)}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
