"""Count the outcomes of the hostile-input suite (tests/hostile): one-line error, correct,
traceback, silently wrong (and multi-line errors, cases that cannot be built).

    python bench/hostile_counts.py                       # this checkout
    PYTHONPATH=/path/to/old/src python bench/hostile_counts.py --label before

Each case runs in its own temporary folder, in this process, through ``tscope``'s ``main``.
Prints a table of counts and the cases that are not as expected; writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # as in the tests: never the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TSCOPE_PROGRESS", "0")  # as in the tests: stderr holds what a case says
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' hostile cases
sys.path.insert(0, str(ROOT / "bench"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="this checkout", help="name of the code under test")
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    args = ap.parse_args(argv)

    from _results import write_json

    import transferscope
    from tests.hostile import cases_cli, cases_data, cases_models  # noqa: F401
    from tests.hostile.harness import CASES, run_case

    counts, rows, start = Counter(), [], time.perf_counter()
    for name in sorted(CASES):
        if args.k not in name:
            continue
        c = CASES[name]
        with tempfile.TemporaryDirectory() as tmp:
            outcome, detail = run_case(c, Path(tmp))
        counts[outcome] += 1
        rows.append({"case": name, "expected": c.expect, "outcome": outcome,
                     "detail": detail[:300]})
    print(f"hostile suite on {args.label} ({transferscope.__file__}), {len(rows)} cases, "
          f"{time.perf_counter() - start:.0f} s")
    for k in ("error", "correct", "traceback", "wrong", "multiline", "setup"):
        print(f"  {k:10s} {counts.get(k, 0)}")
    misses = [r for r in rows if r["outcome"] != r["expected"]]
    for r in misses:
        print(f"  not as expected: {r['case']}: {r['outcome']}: {r['detail'][:160]}")
    slug = "".join(ch if ch.isalnum() else "-" for ch in args.label)
    write_json(ROOT / "bench" / "results" / f"hostile_counts_{slug}.json",
               {"label": args.label, "counts": dict(counts), "cases": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
