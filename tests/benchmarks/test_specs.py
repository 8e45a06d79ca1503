"""The benchmark's parts (benchmarks/*.toml) fit together: every part bench_parts.py names is a
study spec, all are scored at one width (the shipped advisor is fitted on all of them), every
source is a model name the package can load, and the shipped-model parts put their sources on
targets of the other parts, so that their pairs join those targets' candidate sets."""

import json

import pytest

from tests.benchmarks import ROOT, bench_module
from transferscope.backends import check_model_name
from transferscope.study import load_spec


@pytest.fixture(scope="module")
def specs():
    parts = bench_module("bench_parts")
    return parts, {part: load_spec(ROOT / "benchmarks" / f"{part}.toml")
                   for part in parts.ALL_PARTS}


def test_every_part_is_a_spec_at_one_width_with_loadable_sources(specs):
    names, parts = specs
    assert set(names.MODALITY) == set(names.ALL_PARTS)
    assert not set(names.PARTS) & set(names.MEASURED_ONLY)
    assert len({s.width for s in parts.values()}) == 1
    assert len({s.db for s in parts.values()}) == len(parts)  # one store each
    for part, spec in parts.items():
        pretrained = {p.name for p in spec.pretrain}
        for source in spec.sources:
            if source.startswith("pretrained:"):
                assert source.partition(":")[2] in pretrained, (part, source)
            else:
                check_model_name(source)  # a registered backend and a valid name


def test_shipped_parts_join_the_candidate_sets_of_other_parts(specs):
    _, parts = specs
    own = {t for part, s in parts.items() if not part.startswith("shipped-") for t in s.targets}
    shipped = [s for part, s in parts.items() if part.startswith("shipped-")]
    assert shipped
    for spec in shipped:
        assert set(spec.targets) <= own
        assert spec.test_data and all(spec.test_data[t] == parts[_owner(parts, t)].test_data[t]
                                      for t in spec.targets)


def _owner(parts, target):
    return next(p for p, s in parts.items() if not p.startswith("shipped-") and
                target in s.targets)


def test_the_shipped_advisor_is_fitted_on_the_fitted_parts_alone(specs):
    from transferscope.advise.model import load_advisor

    names, _ = specs
    trained = load_advisor().trained_on
    fitted = [f"benchmarks/results/{p}.json" for p in names.PARTS
              if (ROOT / "benchmarks" / "results" / f"{p}.json").exists()]
    assert trained["source"] == "benchmark: " + ", ".join(fitted)
    saved = [json.loads((ROOT / "benchmarks" / "results" / f"{p}.json").read_text())["pairs"]
             for p in names.PARTS]
    assert trained["targets"] == len({r["target"] for pairs in saved for r in pairs})
    for part in names.MEASURED_ONLY:
        assert f"results/{part}.json" not in trained["source"]


def test_saved_truth_belongs_to_its_spec(specs):
    _, parts = specs
    for part, spec in parts.items():
        path = ROOT / "benchmarks" / "results" / f"{part}.json"
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        assert res["spec"] == f"benchmarks/{part}.toml"
        assert {p["target"] for p in res["pairs"]} <= set(spec.targets)
        assert {p["source"] for p in res["pairs"]} <= set(spec.sources)


def test_truth_table_merges_a_target_over_parts():
    tables = bench_module("tables")

    def part(source, acc):
        cell = {"complete": True, "best_acc": acc, "best_strategy": "full", "per_class": 8,
                "scratch_acc": 0.5, "verdict": "POSITIVE",
                "strategies": {"full": {"gain": acc - 0.5, "gain_lo": 0.0, "gain_hi": 0.2,
                                        "verdict": "POSITIVE"}}}
        return {"pairs": [{"target": "benchmarks/data/t_train.npz", "source": source,
                           "modality": "image", "truth": {"0.1": cell}}]}

    rows = tables.truth_table({"images": part("pretrained:a", 0.6),
                               "shipped-images": part("effnet-lite:0@32", 0.7)})
    assert len(rows) == 3  # header, rule, one row for the target's one size
    assert "| t | 8 | 2 |" in rows[2] and "effnet-lite:0@32 (full) | 0.700" in rows[2]


def test_the_size_table_sums_the_fitted_parts_and_marks_the_others():
    tables = bench_module("tables")

    def part(target, modality):
        cell = {"complete": True, "best_strategy": "full", "verdict": "INCONCLUSIVE",
                "strategies": {"full": {}}}
        return {"pairs": [{"target": target, "source": "s", "modality": modality,
                           "truth": {"0.2": cell, "1.0": cell}}],
                "runs": {"train": {"finished": 4, "planned": 4}}, "cpu_seconds": 3600.0}

    rows = tables.size_table({"a": part("t1", "image"), "b": part("t2", "series")},
                             measured_only=("b",))
    assert rows[2].startswith("| a | image | 1 | 1 | 2 | 4 / 4 | 1.00 | 0 |")
    assert rows[3].startswith("| all | 1 modalities | 1 | 1 | 2 |")  # b not summed
    assert rows[4].startswith("| b (not fitted on) | series | 1 | 1 | 2 |")


def test_the_modality_table_shows_the_saved_held_out_rows():
    tables = bench_module("tables")
    row = {"modality": "series", "targets": 3, "examples": 24, "mean_p": 0.51,
           "beat_rate": 0.38, "brier": 0.204, "ece": 0.287, "ece_calibrated": 0.174,
           "ece_p": 0.01, "nt_caught": 2, "nt_actual": 6, "nt_flagged": 3}
    rows = tables.modality_table({"by_modality": [row]})
    assert len(rows) == 3
    assert rows[2] == ("| series | 3 | 24 | 0.51 / 0.38 | 0.204 | 0.287 (0.174, p 0.01) | "
                       "2 / 6 (3) |")
    assert len(tables.modality_table({})) == 2  # a loto file written before the rows


def test_build_never_replaces_saved_truth_with_less(tmp_path, monkeypatch):
    build = bench_module("build")
    (tmp_path / "results").mkdir()
    saved = tmp_path / "results" / "images.json"

    def res(cells):
        return {"pairs": [{"truth": {str(i): {"complete": True} for i in range(cells)}}]}

    saved.write_text(json.dumps(res(4)))
    monkeypatch.chdir(tmp_path)  # main moves to ROOT; the test's cwd comes back after it
    monkeypatch.setattr(build, "HERE", tmp_path)
    monkeypatch.setattr(build, "ROOT", tmp_path)
    monkeypatch.setattr(build, "fit_shipped", lambda: {"rows": []})
    monkeypatch.setattr(build, "build", lambda part: {**res(2), "cpu_seconds": 1.0})
    assert build.main(["images"]) == 0  # a rerun under way: the store has 2 cells of 4
    assert json.loads(saved.read_text()) == res(4)
    assert build.main(["images", "--replace"]) == 0
    assert json.loads(saved.read_text()) == {**res(2), "cpu_seconds": 1.0}
    monkeypatch.setattr(build, "build", lambda part: {**res(5), "cpu_seconds": 1.0})
    assert build.main(["images"]) == 0  # more than saved: written
    assert build._complete_cells(json.loads(saved.read_text())) == 5


def test_build_on_a_fresh_clone_keeps_the_saved_truth(tmp_path, monkeypatch):
    """A fresh clone has no benchmarks/store (ignored by git): build makes the folder, finds
    no finished pair in the new store and keeps the saved truth, instead of the store's
    "create the folder first" error."""
    import shutil

    build = bench_module("build")
    bench = tmp_path / "benchmarks"
    (bench / "results").mkdir(parents=True)
    shutil.copy(ROOT / "benchmarks" / "images.toml", bench)
    saved = ROOT / "benchmarks" / "results" / "images.json"
    shutil.copy(saved, bench / "results")
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "lenet.py", tmp_path / "examples")  # the part's model
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(build, "HERE", bench)
    monkeypatch.setattr(build, "ROOT", tmp_path)
    monkeypatch.setattr(build, "fit_shipped", lambda: {"rows": []})
    assert build.main(["images"]) == 0
    assert (bench / "store" / "images.db").exists()
    assert (bench / "results" / "images.json").read_bytes() == saved.read_bytes()
