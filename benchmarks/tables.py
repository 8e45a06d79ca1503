"""Print the benchmark's tables in Markdown (the README's "The transfer benchmark" section).

    python benchmarks/tables.py

Reads only what ``benchmarks/build.py`` saved (``benchmarks/results/*.json``, and
``bench/results/width.json`` when ``bench/width.py`` has run): the size of each part, the
truth per target, the negative-transfer cells and whether they survive a doubled scratch
budget, and the advisor's leave-one-target-out evaluation beside every single metric.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench_parts import ALL_PARTS, MEASURED_ONLY

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _short(name: str) -> str:
    name = name.replace("benchmarks/data/", "").replace("pretrained:", "")
    name = name.replace("torch:examples/lenet.py:lenet@", "").replace(
        "torch:examples/fcn.py:fcn@", "").replace("hf:", "")
    return name.replace("_train.npz", "").replace("_train.csv", "").replace(
        ".safetensors", "")


def size_table(parts: dict, measured_only=MEASURED_ONLY) -> list[str]:
    """One row per part: targets, pairs, complete cells, CPU hours, NEGATIVE cells; the
    ``all`` row sums the parts the advisor is fitted on, and the ``measured_only`` ones
    follow it, marked."""
    out = ["| part | modality | targets | pairs | complete (pair, size) cells | runs finished "
           "/ planned | CPU hours | NEGATIVE cells (best strategy) | of them robust to a "
           "doubled scratch budget | cells whose best strategy or scratch chose the learning-"
           "rate grid's edge in most seeds |", "|---|---|---|---|---|---|---|---|---|---|"]
    targets_all, pairs_all, cells_all, fitted, after = set(), 0, 0, set(), []
    for name, res in parts.items():
        pairs = res["pairs"]
        targets = {p["target"] for p in pairs}
        cells = [(p, s) for p in pairs for s in p["truth"].values() if s.get("complete")]
        neg = [(p, s) for p, s in cells if s["verdict"] == "NEGATIVE"]
        checked = [s["strategies"][s["best_strategy"]].get("budget_holds") for _, s in neg]
        robust = (f"{sum(bool(c) for c in checked)} of {len(neg)}"
                  if any(c is not None for c in checked) else "not checked")
        edges = [s["strategies"][s["best_strategy"]].get("lr_edge") for _, s in cells]
        edged = (f"{sum(bool(e) for e in edges)} of {len(cells)}"
                 if all(e is not None for e in edges) else "not recorded")
        runs = res["runs"].get("train", {})
        row = (f"| {name}{' (not fitted on)' if name in measured_only else ''} | "
               f"{pairs[0]['modality'] if pairs else ''} | {len(targets)} | "
               f"{len(pairs)} | {len(cells)} | {runs.get('finished', '?')} / "
               f"{runs.get('planned', '?')} | {res['cpu_seconds'] / 3600:.2f} | {len(neg)} "
               f"| {robust} | {edged} |")
        if name in measured_only:
            after.append(row)
            continue
        out.append(row)
        targets_all |= targets
        pairs_all += len(pairs)
        cells_all += len(cells)
        fitted |= {p["modality"] for p in pairs}
    out.append(f"| all | {len(fitted)} modalities | {len(targets_all)} | {pairs_all} | "
               f"{cells_all} | | | | | |")
    return out + after


def truth_table(parts: dict) -> list[str]:
    """Per (target, size), over every part that has the target: the best source's scratch
    accuracy, the best source, its best strategy, its gain, and the worst source."""
    out = ["| target | per class | sources | scratch (best source's) | best source (strategy) "
           "| its accuracy | gain [95 %] | verdict | worst source (strategy) | its gain |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    cells = {}
    for res in parts.values():
        for p in res["pairs"]:
            for f, s in p["truth"].items():
                if s.get("complete"):
                    cells.setdefault((p["target"], float(f)), []).append((p, s))
    for (target, _), cell in sorted(cells.items()):
        best = max(cell, key=lambda c: c[1]["best_acc"])
        worst = min(cell, key=lambda c: c[1]["best_acc"])
        b = best[1]["strategies"][best[1]["best_strategy"]]
        w = worst[1]["strategies"][worst[1]["best_strategy"]]
        out.append(
            f"| {_short(target)} | {best[1]['per_class']:.0f} | {len(cell)} | "
            f"{best[1]['scratch_acc']:.3f} | {_short(best[0]['source'])} "
            f"({best[1]['best_strategy']}) | {best[1]['best_acc']:.3f} | "
            f"{b['gain']:+.3f} [{b['gain_lo']:+.3f}, {b['gain_hi']:+.3f}] | "
            f"{b['verdict']} | {_short(worst[0]['source'])} ({worst[1]['best_strategy']}) "
            f"| {w['gain']:+.3f} ({w['verdict']}) |")
    return out


def loto_table(loto: dict) -> list[str]:
    """The advisor and every single metric, held out target by target."""
    out = ["| predictor | weighted tau [95 %] | top-1 regret (median) | NT precision / recall "
           "/ F1 | Brier [95 %] (of P(negative) [95 %]; its mean / the negative share) "
           "| ECE [95 %] (a calibrated predictor's here, p) | strategy "
           "accuracy [95 %] (always LP / always full / the layer rule) | strategy accuracy "
           "minus always-full's [95 %] | accuracy lost to the best strategy: advisor / always "
           "LP / always full (advisor minus always-full [95 %]) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in loto["rows"]:
        nt = (f"{r['precision']:.2f} / {r['recall']:.2f} / {r['f1']:.2f} "
              f"[{r['f1_lo']:.2f}, {r['f1_hi']:.2f}] ({r['nt_flagged']} flagged, "
              f"{r['nt_actual']} negative"
              + (f"; of the {r['nt_robust']} robust to a doubled scratch budget, "
                 f"{r['nt_robust_caught']} flagged" if "nt_robust" in r else "")
              + ")" if r.get("f1") == r.get("f1") else "")
        cal = (f"| {r['brier']:.3f} [{r['brier_lo']:.3f}, {r['brier_hi']:.3f}] "
               f"({r['brier_negative']:.3f} [{r['brier_negative_lo']:.3f}, "
               f"{r['brier_negative_hi']:.3f}]; {r['mean_p_negative']:.2f} / "
               f"{r['negative_rate']:.2f}) | "
               f"{r['ece']:.3f} [{r['ece_lo']:.3f}, {r['ece_hi']:.3f}] (calibrated: "
               f"{r['ece_calibrated']:.3f}, p {r['ece_p']:.2f}) | "
               f"{r['strategy_acc']:.2f} [{r['strategy_acc_lo']:.2f}, "
               f"{r['strategy_acc_hi']:.2f}] ({r['always_lp_acc']:.2f} / "
               f"{r['always_full_acc']:.2f} / {r['rule_acc']:.2f} on {r['rule_examples']}) | "
               f"{r['strategy_vs_full']:+.2f} [{r['strategy_vs_full_lo']:+.2f}, "
               f"{r['strategy_vs_full_hi']:+.2f}] | {r['strategy_regret']:.3f} / "
               f"{r['always_lp_regret']:.3f} / {r['always_full_regret']:.3f} "
               f"({r['strategy_regret_vs_full']:+.3f} [{r['strategy_regret_vs_full_lo']:+.3f}, "
               f"{r['strategy_regret_vs_full_hi']:+.3f}]) |" if "brier" in r
               else "| | | | | |")
        out.append(f"| {r['predictor']} | {r['tau']:+.3f} [{r['tau_lo']:+.3f}, "
                   f"{r['tau_hi']:+.3f}] | {r['regret']:.3f} ({r['median_regret']:.3f}) | "
                   f"{nt} {cal}")
    return out


def modality_table(loto: dict) -> list[str]:
    """The advisor held out within each modality: calibration of P(beats scratch) and its
    negative-transfer flags."""
    out = ["| modality | targets | (source, target, size) cells | mean P(beats) / share that "
           "beat | Brier | ECE (a calibrated predictor's here, p) | negative transfers: "
           "caught / all (flagged) |", "|---|---|---|---|---|---|---|"]
    for r in loto.get("by_modality") or []:
        out.append(f"| {r['modality']} | {r['targets']} | {r['examples']} | "
                   f"{r['mean_p']:.2f} / {r['beat_rate']:.2f} | {r['brier']:.3f} | "
                   f"{r['ece']:.3f} ({r['ece_calibrated']:.3f}, p {r['ece_p']:.2f}) | "
                   f"{r['nt_caught']} / {r['nt_actual']} ({r['nt_flagged']}) |")
    return out


def width_table(width: dict) -> list[str]:
    """Mean tau over the metrics per width setting, the advisor's, and how far H-score, GBC and
    SFDA place the widest candidate above where fine-tuning does."""
    named = ("hscore", "gbc", "sfda")
    out = ["| width setting | mean weighted tau over metrics | advisor tau | widest candidate's "
           "place, H-score / GBC / SFDA (> 0: above fine-tuning's) |", "|---|---|---|---|"]
    for w in width["widths"]:
        rows = {r["predictor"]: r for r in width["rows"] if r["width"] == w}
        adv = rows.get("advisor")
        prefs = " / ".join(f"{rows[m]['width_pref']:+.2f}" if m in rows else "-" for m in named)
        out.append(f"| {w} | {width['mean_tau_over_metrics'][w]:+.3f} | "
                   f"{adv['tau'] if adv else float('nan'):+.3f} | {prefs} |")
    return out


def main() -> int:
    """Print every table from the saved results."""
    parts = {p: json.loads((HERE / "results" / f"{p}.json").read_text()) for p in ALL_PARTS
             if (HERE / "results" / f"{p}.json").exists()}
    print("\n".join(size_table(parts)), end="\n\n")
    print("\n".join(truth_table(parts)), end="\n\n")
    loto = json.loads((HERE / "results" / "advisor_loto.json").read_text())
    print(f"Leave-one-target-out over {loto['targets']} targets "
          f"({loto['trained_on'].get('examples')} examples):\n")
    print("\n".join(loto_table(loto)), end="\n\n")
    print("\n".join(modality_table(loto)), end="\n\n")
    extras = loto.get("extras") or {}
    for name, e in extras.items():
        print(f"{name}: held-out median |log error| {e['median_abs_log_error']:.2f} "
              f"(x{e['median_factor']:.2f}), 95 % half-width x{e['factor95']:.1f}, "
              f"Spearman {e['spearman']:+.2f} on {e['examples']} examples")
    width = ROOT / "bench" / "results" / "width.json"
    if width.exists():
        print()
        print("\n".join(width_table(json.loads(width.read_text()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
