"""benchmarks/rerun_check.py: two truth files of one part compared cell by cell."""

import math

import pytest

from tests.benchmarks import bench_module


@pytest.fixture(scope="module")
def rerun():
    return bench_module("rerun_check")


def _truth(cells):
    """cells: {(source, target, size): {strategy: (gain, lo, hi, verdict)}}"""
    pairs = {}
    for (source, target, size), strategies in cells.items():
        p = pairs.setdefault((source, target), {"source": source, "target": target,
                                                "truth": {}})
        best = max(strategies, key=lambda s: strategies[s][0])
        p["truth"][size] = {
            "complete": True, "best_strategy": best, "best_acc": 0.5 + strategies[best][0],
            "strategies": {s: {"gain": g, "gain_lo": lo, "gain_hi": hi, "verdict": v}
                           for s, (g, lo, hi, v) in strategies.items()}}
    return {"pairs": list(pairs.values())}


def test_rerun_check_counts_agreement_contradictions_and_z(rerun):
    old = _truth({("a", "t", "0.1"): {"full": (0.10, 0.06, 0.14, "POSITIVE"),
                                      "lp": (0.00, -0.04, 0.04, "INCONCLUSIVE")},
                  ("b", "t", "0.1"): {"full": (0.05, 0.01, 0.09, "POSITIVE")},
                  ("b", "t", "1.0"): {"full": (0.0, -0.1, 0.1, "INCONCLUSIVE")}})
    new = _truth({("a", "t", "0.1"): {"full": (0.12, 0.08, 0.16, "POSITIVE"),
                                      "lp": (0.00, -0.04, 0.04, "INCONCLUSIVE")},
                  ("b", "t", "0.1"): {"full": (-0.05, -0.09, -0.01, "NEGATIVE")}})
    out = rerun.compare(old, new)
    assert out["pair_cells"] == 2 and out["strategy_cells"] == 3 and out["only_old"] == 1
    assert out["verdict_agree"] == 2
    assert out["contradictions"] == [["b", "t", "0.1", "full", "POSITIVE", "NEGATIVE"]]
    se = math.hypot(0.08 / (2 * rerun.Z95), 0.08 / (2 * rerun.Z95))  # intervals 0.08 wide
    z = {tuple(r["cell"]): r["z"] for r in out["z"]}
    assert z[("a", "t", "0.1", "full")] == pytest.approx(0.02 / se)
    assert z[("b", "t", "0.1", "full")] == pytest.approx(-0.10 / se)
    assert out["within_z95"] == pytest.approx(2 / 3)  # z: 0.69, 0, -3.5
    assert out["median_abs_gain_diff"] == pytest.approx(0.02)
    assert out["old_in_new"] == pytest.approx(2 / 3)
    assert out["best_strategy_agree"] == 2 and out["best_source_agree"] == 1  # a, both
    assert out["target_cells"] == 1


def test_rerun_check_says_what_it_expected(rerun, tmp_path, capsys):
    (tmp_path / "a.json").write_text('{"pairs": []}')
    assert rerun.main([str(tmp_path / "a.json"), str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rerun_check: expected a benchmark truth JSON") and "\n" not in err
    (tmp_path / "b.json").write_text("[1]")
    assert rerun.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
