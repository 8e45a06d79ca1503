"""Would fitting the advisor on another part help it on the targets it is fitted on now?

    python benchmarks/admit_check.py series-ucr
    python benchmarks/admit_check.py --drop-each    # how stable: each fitted part left out

Held out target by target (:func:`transferscope.advise.model.loto_predictions`), the advisor's
predictions on the cells of ``bench_parts.PARTS`` are judged twice: fitted on those parts
alone, and on them plus the parts named. Both are scored on the same cells only (the named
parts' own cells are left out of the comparison): weighted Kendall tau within each (target,
size) cell (mean), Brier score of P(beats scratch), and the negative-transfer flag's
precision, recall and F1, overall and per modality. This is how ``series-ucr`` was left out of
the fit (``bench_parts.MEASURED_ONLY``; README, "The transfer benchmark"). About 15 s.

``--drop-each`` asks the converse, how much the held-out numbers depend on which parts the
benchmark happens to have: each part of ``PARTS`` is left out in turn and the advisor judged,
held out, on the cells of the others (about a minute). Beside the flag's F1 it prints the F1 of
the best threshold chosen after the fact on the held-out P(negative): no threshold rule can
do better with those probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from bench_parts import ALL_PARTS, PARTS

HERE = Path(__file__).resolve().parent


def _pairs(parts) -> list[dict]:
    out = []
    for part in parts:
        path = HERE / "results" / f"{part}.json"
        if path.exists():
            out += json.loads(path.read_text())["pairs"]
    return out


def judge(records: list[dict], on_targets: set[str]) -> dict:
    """Leave-one-target-out predictions from ``records``, judged on the cells of
    ``on_targets`` alone.

    Parameters
    ----------
    records : list of dict
        Benchmark pairs (``benchmarks/results/<part>.json``'s ``pairs``).
    on_targets : set of str
        The targets whose cells are judged.

    Returns
    -------
    dict
        ``cells`` (examples judged), ``tau`` (mean weighted Kendall tau over (target, size)
        cells), ``brier``, ``flagged``, ``negative``, ``caught``, ``f1``, ``best_f1`` (the F1
        of the best threshold on the held-out P(negative), chosen after the fact), and
        ``by_modality``: per modality ``brier`` and ``flagged``.
    """
    from transferscope.advise.evaluation import _cells, _f1, _rank_stats
    from transferscope.advise.model import best_f1_threshold, loto_predictions

    pred = loto_predictions(records)
    ex = pred["examples"]
    keep = np.array([k[0] in on_targets for k in ex.keys])
    taus, _ = _rank_stats(pred["acc"], ex.acc,
                          {k: v for k, v in _cells(ex).items() if k[0] in on_targets})
    beats = np.asarray(ex.beats, float)[keep]
    p = pred["p_beats"][keep]
    neg = np.asarray(ex.negative, bool)[keep]
    flag = np.asarray(pred["flag_negative"], bool)[keep]
    caught = int((neg & flag).sum())
    f1 = _f1(flag, neg)[2]
    p_neg = pred["p_negative"][keep]
    best_f1 = best_f1_threshold(p_neg, neg)[1] if neg.any() else 0.0
    mods = np.asarray(ex.modalities)[keep]
    return {"cells": int(keep.sum()), "tau": float(np.nanmean(taus)),
            "brier": float(np.mean((p - beats) ** 2)), "flagged": int(flag.sum()),
            "negative": int(neg.sum()), "caught": caught, "f1": float(f1),
            "best_f1": float(best_f1),
            "by_modality": {m: {"brier": float(np.mean((p[mods == m] - beats[mods == m]) ** 2)),
                                "flagged": int(flag[mods == m].sum())}
                            for m in sorted(set(mods))}}


def _line(name: str, targets: set, r: dict) -> str:
    per = "; ".join(f"{m}: Brier {v['brier']:.3f}, {v['flagged']} flagged"
                    for m, v in r["by_modality"].items())
    return (f"{name}: on {len(targets)} targets' {r['cells']} cells: tau_w {r['tau']:.3f}, "
            f"Brier {r['brier']:.3f}, NT flagged {r['flagged']}, caught {r['caught']} of "
            f"{r['negative']}, F1 {r['f1']:.2f} (best threshold after the fact "
            f"{r['best_f1']:.2f}) ({per})")


def drop_each() -> list[tuple[str, set, dict]]:
    """The advisor held out, fitted on every part of ``PARTS`` and on all but one in turn,
    each judged on the cells of the parts it is fitted on: ``(name, targets, judge(...))``."""
    out = []
    for left in (None, *PARTS):
        records = _pairs([p for p in PARTS if p != left])
        targets = {r["target"] for r in records}
        out.append(("all parts" if left is None else f"without {left}", targets,
                    judge(records, targets)))
    return out


def main(argv=None) -> int:
    """Print the comparison for the parts named (or, with ``--drop-each``, each part left
    out in turn)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="*", help=f"parts among {', '.join(ALL_PARTS)} not in "
                                             "the fit")
    ap.add_argument("--drop-each", action="store_true",
                    help="leave each fitted part out in turn instead")
    args = ap.parse_args(argv)
    if args.drop_each == bool(args.parts):
        ap.error("expected either parts not in the fit or --drop-each, got "
                 + ("both" if args.parts else "neither"))
    if args.drop_each:
        for name, targets, r in drop_each():
            print(_line(name, targets, r))
        return 0
    bad = sorted(set(args.parts) - (set(ALL_PARTS) - set(PARTS)))
    if bad:
        ap.error(f"expected parts the advisor is not fitted on "
                 f"({', '.join(sorted(set(ALL_PARTS) - set(PARTS)))}), got {', '.join(bad)}")
    fitted = _pairs(PARTS)
    extra = _pairs(args.parts)
    if not extra:
        print(f"no saved truth for {', '.join(args.parts)}: run the part's study and "
              "benchmarks/build.py first", file=sys.stderr)
        return 2
    targets = {r["target"] for r in fitted}
    for name, records in (("fitted on PARTS", fitted),
                          (f"fitted on PARTS + {', '.join(args.parts)}", fitted + extra)):
        print(_line(name, targets, judge(records, targets)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
