"""benchmarks/admit_check.py: the advisor held out on the fitted parts' targets, fitted with and
without a measured-only part, judged on the same cells."""

import json

import pytest

from tests.benchmarks import ROOT, bench_module


@pytest.fixture(scope="module")
def admit():
    return bench_module("admit_check")


def test_judging_every_fitted_target_gives_the_saved_leave_one_target_out_numbers(admit):
    fitted = admit._pairs(admit.PARTS)
    saved = json.loads((ROOT / "benchmarks" / "results" / "advisor_loto.json").read_text())
    row = saved["rows"][0]
    got = admit.judge(fitted, {r["target"] for r in fitted})
    assert got["cells"] == row["examples"]
    assert got["tau"] == pytest.approx(row["tau"], abs=1e-9)
    assert got["brier"] == pytest.approx(row["brier"], abs=1e-9)
    assert (got["flagged"], got["negative"]) == (row["nt_flagged"], row["nt_actual"])
    assert got["f1"] == pytest.approx(row["f1"], abs=1e-9)


def test_it_refuses_a_part_the_advisor_is_already_fitted_on(admit, capsys):
    with pytest.raises(SystemExit) as exc:
        admit.main(["text"])
    assert exc.value.code == 2
    assert "expected parts the advisor is not fitted on" in capsys.readouterr().err
