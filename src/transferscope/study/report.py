"""One self-contained HTML report of a study: no network access is needed to view it (figures
are inline SVG, styles inline, no external scripts).

Sections: the transfer-gain matrix (source x target, over scratch) per strategy; learning
curves of transfer vs scratch with break-even points; predicted-vs-actual scatter per metric
with its weighted tau; train/validation gap curves; layer profiles where the study's folder
holds ``layers.json`` files; the verdict table and the metric table.
"""

from __future__ import annotations

import html
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from transferscope.errors import InputError, require
from transferscope.store import RunStore, open_store
from transferscope.study.evaluate import edge_summary, evaluate
from transferscope.study.spec import StudySpec
from transferscope.verdict import POWER, VERDICT_RULE, summarise_curves

CHECK = """<script>
// marks how many figures rendered with a non-empty box (read by tests in headless Chromium)
window.addEventListener("load", () => {
  const figs = document.querySelectorAll("figure svg");
  let ok = 0;
  figs.forEach(f => {
    const b = f.getBoundingClientRect();
    if (b.width > 0 && b.height > 0) ok++;
  });
  document.body.dataset.figures = ok + "/" + figs.length;
});
</script>"""

STYLE = """<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td.l{text-align:left}.POSITIVE{color:#1a7f37}.NEGATIVE{color:#cf222e}.INCONCLUSIVE{color:#777}
figure{margin:1em 0}figcaption{font-size:13px;color:#555}
</style>"""


class _Figures:
    """Makes matplotlib figures without pyplot (no global backend switch, nothing left open
    in a notebook user's pyplot state)."""

    def subplots(self, *args, figsize=None, **kw):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*args, **kw)


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _short(name: str, n: int = 28) -> str:
    name = name.replace("pretrained:", "")
    return name if len(name) <= n else "..." + name[-(n - 3):]


def _table(rows, cols) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cls = f' class="l {html.escape(v)}"' if isinstance(v, str) else ""
            text = f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _heatmaps(plt, pairs, strategies):
    out = []
    for strategy in strategies:
        sel = [p for p in pairs if p["strategy"] == strategy]
        if not sel:
            continue
        top = max(p["fraction"] for p in sel)
        sel = [p for p in sel if p["fraction"] == top]
        sources = sorted({p["source"] for p in sel})
        targets = sorted({p["target"] for p in sel})
        m = np.full((len(sources), len(targets)), np.nan)
        for p in sel:
            m[sources.index(p["source"]), targets.index(p["target"])] = p["gain"]
        lim = max(0.05, np.nanmax(np.abs(m)))
        fig, ax = plt.subplots(figsize=(1.3 * len(targets) + 3, 0.55 * len(sources) + 2))
        im = ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim)
        for p in sel:
            i, j = sources.index(p["source"]), targets.index(p["target"])
            mark = "" if p["verdict"] == "INCONCLUSIVE" else "*"
            ax.text(j, i, f"{p['gain']:+.2f}{mark}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(targets)), [_short(t, 18) for t in targets], rotation=30,
                      ha="right", fontsize=8)
        ax.set_yticks(range(len(sources)), [_short(s) for s in sources], fontsize=8)
        fig.colorbar(im, ax=ax, label="test accuracy gain over scratch")
        ax.set_title(f"{strategy}, fraction {top:g}; rows: sources, columns: targets "
                     "(*: POSITIVE or NEGATIVE verdict)", fontsize=9)
        out.append((f"Transfer gain matrix: {strategy}", _svg(fig)))
    return out


def _curves(plt, pairs):
    groups = defaultdict(list)
    for p in pairs:
        groups[(p["target"], p["source"], p["strategy"])].append(p)
    groups = {k: v for k, v in groups.items() if len(v) > 1}
    if not groups:
        return []
    keys = sorted(groups)[:12]
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        pts = summarise_curves([dict(p) for p in groups[key]])
        f = [p["fraction"] for p in pts["points"]]
        ax.plot(f, [p["transfer_acc"] for p in pts["points"]], "o-", label="transfer")
        ax.plot(f, [p["scratch_acc"] for p in pts["points"]], "s--", label="scratch")
        if pts["break_even_fraction"] is not None:
            ax.axvline(pts["break_even_fraction"], color="grey", ls=":", label="break-even")
        ax.set_title(f"{_short(key[1], 20)} -> {_short(key[0], 16)} ({key[2]})", fontsize=8)
        ax.set_xlabel("training fraction", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return [("Learning curves: transfer vs scratch", _svg(fig))]


def _advice(plt, advice: dict) -> list[str]:
    """The advisor against each metric, leave-one-target-out, and its reliability diagram."""
    out = ["<h2>The advisor and each metric, leave-one-target-out</h2>"]
    if not advice["rows"]:
        return out + [f"<p>{html.escape(advice['note'])}</p>"]
    out.append(_table(advice["rows"], [
        "predictor", "cells", "tau", "tau_lo", "tau_hi", "regret", "regret_lo", "regret_hi",
        "median_regret", "nt_flagged", "nt_actual", "nt_robust", "nt_robust_caught",
        "precision", "recall", "f1", "f1_lo",
        "f1_hi", "brier", "brier_lo", "brier_hi", "brier_negative", "mean_p_negative",
        "negative_rate", "ece", "ece_lo", "ece_hi", "ece_calibrated",
        "ece_p", "strategy_acc",
        "strategy_acc_lo", "strategy_acc_hi", "always_lp_acc", "always_full_acc",
        "strategy_vs_full", "strategy_vs_full_lo", "strategy_vs_full_hi", "strategy_regret",
        "always_full_regret", "strategy_regret_vs_full", "strategy_regret_vs_full_lo",
        "strategy_regret_vs_full_hi", "rule_acc", "note"]))
    if len(advice.get("by_modality") or []) > 1:
        out.append("<h3>The advisor within each modality</h3>")
        out.append(_table(advice["by_modality"], [
            "modality", "targets", "examples", "mean_p", "beat_rate", "brier", "ece",
            "ece_calibrated", "ece_p", "nt_actual", "nt_flagged", "nt_caught", "precision",
            "recall", "f1"]))
    rel = advice["reliability"]
    if rel:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
        ax.scatter([b["mean_p"] for b in rel], [b["observed"] for b in rel],
                   s=[20 + 10 * b["n"] for b in rel], label="bins (size: examples)")
        ax.set_xlabel("predicted P(fine-tuning beats scratch)")
        ax.set_ylabel("observed share that beat scratch")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        out.append(f"<h3>Reliability of P(beats scratch)</h3><figure>{_svg(fig)}</figure>")
    out.append(f"<p>{advice['targets']} targets held out in turn; tau: weighted Kendall tau "
               "between the predicted order and the fine-tuned accuracy per (target, size) "
               "cell; regret: accuracy lost by taking the top-predicted source; NT: negative "
               "transfer (the best strategy's verdict NEGATIVE); strategy regret: test accuracy "
               "lost by following the recommended strategy instead of the best measured one; "
               "ece_calibrated: the ECE a "
               "calibrated predictor would show with these probabilities and examples, ece_p: "
               "the share of its draws at or above the observed ECE (consistency "
               "resampling, Brocker &amp; Smith 2007).</p>")
    return out


def _scatter(plt, pairs, metric_rows, metrics):
    out = []
    for m in metrics:
        sel = [p for p in pairs if m in p]
        if not sel:
            continue
        top = max(p["fraction"] for p in sel)
        sel = [p for p in sel if p["fraction"] == top]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for t in sorted({p["target"] for p in sel}):
            pts = [p for p in sel if p["target"] == t]
            ax.scatter([p[m] for p in pts], [p["transfer_acc"] for p in pts], label=_short(t, 18))
        tau = next((r["tau"] for r in metric_rows if r["metric"] == m), float("nan"))
        ax.set_title(f"{m}: weighted tau {tau:.2f} (mean over targets)", fontsize=9)
        ax.set_xlabel(f"{m} score")
        ax.set_ylabel("fine-tuned test accuracy")
        ax.legend(fontsize=7)
        out.append((f"Predicted vs actual: {m}", _svg(fig)))
    return out


def _gaps(plt, store, pairs):
    if not pairs:
        return []
    top = max(p["fraction"] for p in pairs)
    chosen = [p for p in pairs if p["fraction"] == top][:6]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for p in chosen:
        for arm, ids, ls in (("transfer", p["transfer_runs"], "-"),
                             ("scratch", p["scratch_runs"], "--")):
            ep = store.epochs_of(ids[0])
            ax.plot([e["epoch"] for e in ep],
                    [e["train_acc"] - e["val_acc"] for e in ep], ls=ls,
                    label=f"{arm}: {_short(p['source'], 14)} -> {_short(p['target'], 12)}"
                    if arm == "transfer" else None)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("train - validation accuracy")
    first = " fold 1" if any(p.get("folds") for p in chosen) else ""
    ax.set_title("overfitting: train/validation gap (solid: transfer, dashed: scratch; "
                 f"seed 0{first})", fontsize=8)
    ax.legend(fontsize=6)
    return [("Train/validation gap", _svg(fig))]


def _layer_profiles(plt, folder: Path | None):
    out = []
    for path in sorted(folder.glob("**/layers.json")) if folder and folder.exists() else []:
        prof = json.loads(path.read_text())["profile"]
        fig, ax = plt.subplots(figsize=(6, 3))
        x = range(len(prof["rows"]))
        ax.plot(x, [r["score"] for r in prof["rows"]], "o-", label="consensus")
        ax.plot(x, [r["cka_random"] for r in prof["rows"]], "s--", label="CKA to random")
        ax.set_xticks(list(x), [r["layer"] for r in prof["rows"]], rotation=60, fontsize=7)
        ax.set_title(f"{_short(prof['model'], 30)} on {prof['data']}", fontsize=9)
        ax.legend(fontsize=7)
        out.append((f"Layer profile: {path.parent.name}", _svg(fig)))
    return out


def write_report(spec: StudySpec, out, store: RunStore | None = None) -> Path:
    """Write the study's self-contained HTML report to ``out``, from its store alone.

    Parameters
    ----------
    spec : StudySpec
        The study.
    out : path
        The HTML file (folders created).
    store : RunStore, optional
        Default: the spec's ``db``.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InputError
        When the study has no finished (target, source) pair to report.
    """
    if Path(out).is_dir():
        raise InputError(f"Expected a file to write the report to, got the folder {out}; pass "
                         "a file name, e.g. -o report.html")
    require("matplotlib", "plot", "study reports")
    plt = _Figures()
    store = store or open_store(spec.db)
    ev = evaluate(spec, store)
    pairs = ev["pairs"]
    if not pairs:
        raise InputError(f"Expected finished runs of study {spec.name!r} in {spec.db}, got no "
                         "finished (target, source) pair; run it first: tscope study run SPEC")
    figures = (_heatmaps(plt, pairs, spec.strategies) + _curves(plt, pairs)
               + _scatter(plt, pairs, ev["metrics"], spec.metrics) + _gaps(plt, store, pairs)
               + _layer_profiles(plt, spec.artifacts_dir))
    parts = [f"<h1>Study {html.escape(spec.name)}</h1>",
             f"<p>{len(pairs)} (target, source, strategy, fraction) cells; "
             f"share with negative transfer: {ev['share_negative']:.2f}. "
             f"{html.escape(VERDICT_RULE.format(m=0).capitalize())}.</p>"]
    edges = edge_summary(pairs)
    if edges:
        parts.append(f"<p><strong>Note:</strong> {html.escape(edges)}.</p>")
    for title, svg in figures:
        parts.append(f"<h2>{html.escape(title)}</h2><figure>{svg}</figure>")
    parts.append("<h2>How well the scores predicted the outcome</h2>")
    parts.append(_table(ev["metrics"], ["strategy", "fraction", "metric", "targets", "tau",
                                        "tau_lo", "tau_hi", "pearson", "regret", "regret_lo",
                                        "regret_hi", "neg_flagged", "neg_actual", "precision",
                                        "recall", "note"]))
    parts += _advice(plt, ev["advice"])
    parts.append("<h2>Verdicts</h2>")
    budget = (["budget_acc", "budget_gain", "budget_verdict", "budget_holds"]
              if spec.check_budget else [])
    parts.append(_table(pairs, ["target", "source", "strategy", "fraction", "seeds", "folds",
                                "transfer_acc", "scratch_acc", "gain", "gain_lo", "gain_hi",
                                "verdict", "mde", "reading", *budget, "risk"]))
    legend = ("folds: K-fold cross-validation, each seed a repetition with its own folds (0: "
              "one split); mde: the smallest gain the comparison detects with "
              f"{POWER:.0%} power; reading: why an INCONCLUSIVE verdict is one (no effect, or "
              "too little evidence)")
    if spec.check_budget:
        legend += ("; budget_*: transfer against the baseline trained at twice the budget, "
                   "and whether the verdict holds")
    parts.append(f"<p>{html.escape(legend)}.</p>")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>transferscope study {html.escape(spec.name)}</title>{STYLE}</head><body>"
            + "\n".join(parts) + CHECK + "</body></html>")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
