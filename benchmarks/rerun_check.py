"""Does a benchmark part's truth survive a rerun? Compare two truth JSONs of one part.

    python benchmarks/rerun_check.py OLD.json NEW.json [--json OUT]
    # e.g. the saved truth against a rerun's:
    git show HEAD~5:benchmarks/results/images.json > /tmp/images-old.json
    python benchmarks/rerun_check.py /tmp/images-old.json benchmarks/results/images.json

Over every (source, target, data size, strategy) cell complete in both files:

- verdicts: how many agree, and how many contradict (POSITIVE in one, NEGATIVE in the other);
- gains: the difference new - old (median absolute), and ``z = (new - old) / sqrt(se_old^2 +
  se_new^2)`` with each standard error read off its 95 % interval, ``se = (hi - lo) / (2 x
  1.96)``. With honest intervals and the same sources, ``|z| <= 1.96`` in about 95 % of the
  cells; sources pretrained again add variance the intervals do not hold, so fewer;
- per (source, target, data size): whether the best strategy is the same; per (target, data
  size): whether the best source is the same.

Prints a table (markdown) and, with ``--json``, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

Z95 = 1.959963984540054


def _cells(res: dict) -> dict:
    """(source, target, size) -> that size's truth, complete ones only."""
    return {(p["source"], p["target"], size): t for p in res["pairs"]
            for size, t in p["truth"].items() if t.get("complete")}


def compare(old: dict, new: dict) -> dict:
    """Compare two truth files of one benchmark part (:mod:`build`'s JSON).

    Parameters
    ----------
    old, new : dict
        Truth files: ``pairs`` with per data size ``truth`` and per strategy ``gain``,
        ``gain_lo``, ``gain_hi``, ``verdict``.

    Returns
    -------
    dict
        ``strategy_cells`` (shared (pair, size, strategy) cells), ``verdict_agree``,
        ``contradictions`` (list of the cells: POSITIVE in one, NEGATIVE in the other),
        ``median_abs_gain_diff``, ``within_z95`` (share with ``|z| <= 1.96``), ``z`` (each
        cell's), ``old_in_new`` / ``new_in_old`` (share of gains inside the other's 95 %
        interval); ``pair_cells``, ``best_strategy_agree``; ``target_cells``,
        ``best_source_agree``; ``only_old`` / ``only_new``: complete (pair, size) cells in
        one file alone.
    """
    a, b = _cells(old), _cells(new)
    shared = sorted(set(a) & set(b))
    rows, contradictions = [], []
    for key in shared:
        sa, sb = a[key]["strategies"], b[key]["strategies"]
        for s in sorted(set(sa) & set(sb)):
            x, y = sa[s], sb[s]
            if any(x.get(k) is None or y.get(k) is None for k in ("gain", "gain_lo", "gain_hi")):
                continue
            se = np.hypot((x["gain_hi"] - x["gain_lo"]) / (2 * Z95),
                          (y["gain_hi"] - y["gain_lo"]) / (2 * Z95))
            z = (y["gain"] - x["gain"]) / se if se > 0 else (0.0 if y["gain"] == x["gain"]
                                                             else np.inf)
            rows.append({"cell": [*key, s], "old": x["gain"], "new": y["gain"], "z": float(z),
                         "z_ok": bool(abs(z) <= Z95), "diff": abs(y["gain"] - x["gain"]),
                         "agree": x["verdict"] == y["verdict"],
                         "old_in_new": y["gain_lo"] <= x["gain"] <= y["gain_hi"],
                         "new_in_old": x["gain_lo"] <= y["gain"] <= x["gain_hi"]})
            if {x["verdict"], y["verdict"]} == {"POSITIVE", "NEGATIVE"}:
                contradictions.append([*key, s, x["verdict"], y["verdict"]])
    n = len(rows)

    def share(key, how=np.mean):
        return float(how([r[key] for r in rows])) if n else float("nan")

    best_src_a, best_src_b = {}, {}
    for cells, best in ((a, best_src_a), (b, best_src_b)):
        for (source, target, size), t in cells.items():
            if (source, target, size) in shared:
                cur = best.get((target, size))
                if cur is None or t["best_acc"] > cur[1]:
                    best[(target, size)] = (source, t["best_acc"])
    targets = sorted(best_src_a)
    return {
        "strategy_cells": n, "verdict_agree": sum(r["agree"] for r in rows),
        "contradictions": contradictions,
        "median_abs_gain_diff": share("diff", np.median), "within_z95": share("z_ok"),
        "old_in_new": share("old_in_new"), "new_in_old": share("new_in_old"),
        "z": rows,
        "pair_cells": len(shared),
        "best_strategy_agree": sum(a[k]["best_strategy"] == b[k]["best_strategy"]
                                   for k in shared),
        "target_cells": len(targets),
        "best_source_agree": sum(best_src_a[k][0] == best_src_b[k][0] for k in targets),
        "only_old": len(set(a) - set(b)), "only_new": len(set(b) - set(a)),
    }


def main(argv=None) -> int:
    """Print the comparison of two truth files (and write it with ``--json``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args(argv)
    res = []
    for p in (args.old, args.new):
        try:
            res.append(json.loads(p.read_text()))
            res[-1]["pairs"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"rerun_check: expected a benchmark truth JSON (benchmarks/results/<part>.json"
                  f"), got {p}: {exc}", file=sys.stderr)
            return 2
    out = compare(*res)
    n = out["strategy_cells"]
    print("| shared (pair, size) cells | strategy cells | verdicts agree | contradictions "
          "| median abs gain difference | abs z <= 1.96 | old gain in new 95 % | new gain in "
          "old 95 % | best strategy agrees | best source agrees |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {out['pair_cells']} | {n} | {out['verdict_agree']} of {n} | "
          f"{len(out['contradictions'])} | {out['median_abs_gain_diff']:.3f} | "
          f"{out['within_z95']:.2f} | {out['old_in_new']:.2f} | {out['new_in_old']:.2f} | "
          f"{out['best_strategy_agree']} of {out['pair_cells']} | "
          f"{out['best_source_agree']} of {out['target_cells']} |")
    for c in out["contradictions"]:
        print("contradiction: " + " ".join(map(str, c)), file=sys.stderr)
    if out["only_old"] or out["only_new"]:
        print(f"complete in one file only: {out['only_old']} (old), {out['only_new']} (new)",
              file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
