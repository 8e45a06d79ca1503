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


def test_drop_each_leaves_out_one_part_at_a_time_and_bounds_the_flag_by_its_best_threshold(
        admit, monkeypatch):
    monkeypatch.setattr(admit, "PARTS", ("series", "text"))
    rows = admit.drop_each()
    assert [name for name, _, _ in rows] == ["all parts", "without series", "without text"]
    both = admit._pairs(["series", "text"])
    assert rows[0][2] == admit.judge(both, {r["target"] for r in both})
    for (_, targets, r), kept in zip(rows[1:], ("text", "series"), strict=True):
        alone = admit._pairs([kept])
        assert targets == {p["target"] for p in alone}
        assert r["cells"] == sum(s["complete"] for p in alone for s in p["truth"].values())
    for _, _, r in rows:  # the threshold chosen held out can only do as well as the best one
        assert 0.0 <= r["f1"] <= r["best_f1"] + 1e-12 <= 1.0 + 1e-12


def test_it_takes_either_parts_or_drop_each(admit, capsys):
    for argv in ([], ["--drop-each", "series-ucr"]):
        with pytest.raises(SystemExit) as exc:
            admit.main(argv)
        assert exc.value.code == 2
        assert "expected either parts not in the fit or --drop-each" in capsys.readouterr().err
