"""Would fitting the advisor on another part help it on the targets it is fitted on now?

    python benchmarks/admit_check.py series-ucr

Held out target by target (:func:`transferscope.advise.model.loto_predictions`), the advisor's
predictions on the cells of ``bench_parts.PARTS`` are judged twice: fitted on those parts
alone, and on them plus the parts named. Both are scored on the same cells only (the named
parts' own cells are left out of the comparison): weighted Kendall tau within each (target,
size) cell (mean), Brier score of P(beats scratch), and the negative-transfer flag's
precision, recall and F1, overall and per modality. This is how ``series-ucr`` was left out of
the fit (``bench_parts.MEASURED_ONLY``; README, "The transfer benchmark"). About 15 s.
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
        cells), ``brier``, ``flagged``, ``negative``, ``caught``, ``f1``, and ``by_modality``:
        per modality ``brier`` and ``flagged``.
    """
    from transferscope.advise.evaluation import _cells, _f1, _rank_stats
    from transferscope.advise.model import loto_predictions

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
    mods = np.asarray(ex.modalities)[keep]
    return {"cells": int(keep.sum()), "tau": float(np.nanmean(taus)),
            "brier": float(np.mean((p - beats) ** 2)), "flagged": int(flag.sum()),
            "negative": int(neg.sum()), "caught": caught, "f1": float(f1),
            "by_modality": {m: {"brier": float(np.mean((p[mods == m] - beats[mods == m]) ** 2)),
                                "flagged": int(flag[mods == m].sum())}
                            for m in sorted(set(mods))}}


def main(argv=None) -> int:
    """Print the comparison for the parts named."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="+", help=f"parts among {', '.join(ALL_PARTS)} not in "
                                             "the fit")
    args = ap.parse_args(argv)
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
        r = judge(records, targets)
        per = "; ".join(f"{m}: Brier {v['brier']:.3f}, {v['flagged']} flagged"
                        for m, v in r["by_modality"].items())
        print(f"{name}: on {len(targets)} targets' {r['cells']} cells: tau_w {r['tau']:.3f}, "
              f"Brier {r['brier']:.3f}, NT flagged {r['flagged']}, caught {r['caught']} of "
              f"{r['negative']}, F1 {r['f1']:.2f} ({per})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
