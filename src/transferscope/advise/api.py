"""``advise``: one table for the user's target: models ordered by predicted fine-tuned accuracy
with an interval, P(fine-tuning beats training from scratch), the strategy, cut layer and head
width, and the evidence behind each."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from transferscope.advise.features import METRICS, candidate_features
from transferscope.advise.model import Advisor, load_advisor
from transferscope.errors import InputError
from transferscope.metrics.width import check_width

TRAIN_SHARE = 0.8  # of the target a fine-tuning run trains on (the rest: validation)


@dataclass
class AdviceResult:
    """Rows (one per candidate, best predicted first), the advisor's provenance and notes;
    :meth:`to_frame` gives a DataFrame."""

    rows: list[dict]
    advisor: dict
    notes: list[str] = field(default_factory=list)

    def to_frame(self):
        """The rows as a pandas DataFrame, one per candidate model."""
        from transferscope.frames import frame

        return frame(self.rows)


def _scores_of(rows: list[dict], metrics) -> list[dict]:
    """Candidates from rank rows: each metric for the model, its twin and the raw input."""
    from transferscope.names import parse_model_name

    by_name = {r["model"]: r for r in rows}
    raw = next((r for r in rows if r["role"] == "raw-baseline"), None)
    out = []
    for r in rows:
        if r["role"] != "candidate":
            continue
        twin = by_name.get(parse_model_name(r["model"]).twin())
        scores = {m: {"value": r.get(m), "random": twin.get(m) if twin else None,
                      "raw": raw.get(m) if raw else None} for m in metrics}
        out.append({"model": r["model"], "scores": scores, "dim": r["dim"], "rank_row": r})
    return out


def _evidence(c: dict) -> str:
    s = c["scores"]
    parts = []
    for m in ("linear_probe", "knn"):
        v = s[m]
        if v["value"] is not None:
            line = f"{m} {v['value']:.3f}"
            extra = [f"{v['value'] - v[b]:+.3f} vs {b}" for b in ("random", "raw")
                     if v[b] is not None]
            parts.append(line + (f" ({', '.join(extra)})" if extra else ""))
    return "; ".join(parts)


#: The advisor's unbounded features (:data:`~transferscope.advise.features.UNBOUNDED`) in
#: their natural units, for the note on those outside its training range.
_SIZES = {"log_classes": "classes", "log_per_class": "training samples per class",
          "log_dim": "feature width"}


def held_out_note(adv: Advisor, kind: str) -> str | None:
    """One line on how the advisor fared held out on targets of ``kind`` (its
    :attr:`~transferscope.advise.model.Advisor.held_out`): how calibrated P(beats scratch) was
    and how many negative transfers its flag caught; None when it was never evaluated.

    Parameters
    ----------
    adv : Advisor
        The advisor.
    kind : str
        The target's modality (``"image"``, ``"text"``, ``"series"``, ...).

    Returns
    -------
    str or None
    """
    if not adv.held_out:
        return None
    h = adv.held_out.get(kind)
    if h is None:
        return (f"held out: the advisor was never evaluated on {kind} targets (its training "
                f"data: {', '.join(sorted(adv.held_out))}); read its numbers with care")
    line = (f"held out on {h['targets']} {kind} targets ({h['examples']} candidates, each "
            f"target predicted by an advisor fitted without it): P(beats scratch) Brier "
            f"{h['brier']:.3f}, ECE {h['ece']:.3f} (a calibrated predictor would show "
            f"{h['ece_calibrated']:.3f} there")
    line += (f"; miscalibrated beyond chance, p {h['ece_p']:.2f})" if h["ece_p"] < 0.05
             else ")")
    if h["nt_actual"]:
        line += (f"; of {h['nt_actual']} negative transfers the flag caught "
                 f"{h['nt_caught']}, with {h['nt_flagged']} flagged in all")
    return line


#: Below this share of the way from always answering the target's largest class to every
#: answer right, reached by the best linear probe of any candidate, its twin or the raw input,
#: ``advise`` says the target gives the advisor nothing to read. On the benchmark the fitted
#: targets' shares are 0.40 (text-c) to 1.00; the one below, Covid3Month_disc (0.15 in the
#: benchmark's scores, the best probe 0.607 where the largest class is 0.536; 0.23 when
#: ``advise`` scores all of its training part), was left out of the fit, and held out the
#: advisor flagged all 8 of its cells as negative transfers where none was; the shipped one,
#: not fitted on it, flags 3 of its 4 candidates (``benchmarks/bench_parts.py``,
#: ``MEASURED_ONLY``). A rule of thumb between the two, not a
#: fitted boundary.
LEARNABLE_SHARE = 0.3


def _unlearnable_note(cands: list[dict], labels) -> list[str]:
    """A note when no probe learns the target beyond its largest class
    (:data:`LEARNABLE_SHARE`); none otherwise, or without linear-probe scores.

    Parameters
    ----------
    cands : list of dict
        The candidates (:func:`_scores_of`): each with ``model`` and ``scores``, the linear
        probe's accuracy for the model, its random-init twin and the raw input.
    labels : array-like of shape (n_samples,)
        The target's labels, as scored.

    Returns
    -------
    list of str
        Zero or one note.
    """
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    majority = counts.max() / counts.sum()
    best, who = -np.inf, ""
    for c in cands:
        s = c["scores"].get("linear_probe") or {}
        for key, name in (("value", c["model"]), ("random", f"{c['model']}'s random twin"),
                          ("raw", "the raw input")):
            if s.get(key) is not None and s[key] > best:
                best, who = float(s[key]), name
    if not np.isfinite(best) or majority >= 1.0:
        return []
    share = (best - majority) / (1.0 - majority)
    if share >= LEARNABLE_SHARE:
        return []
    return [f"target: nothing here learns it much beyond its largest class: the best linear "
            f"probe, {best:.3f} ({who}), goes {max(share, 0.0):.2f} of the way from always "
            f"answering the largest class ({majority:.3f}) to every answer right (below "
            f"{LEARNABLE_SHARE}); on the benchmark's one such target the advisor flagged "
            "candidates NT where none lost to scratch: read P(beats scratch) and NT here as "
            "unreliable, and check the labels"]


def _range_notes(adv: Advisor, x, outside, models: list[str]) -> list[str]:
    """A note naming each size some candidate had outside the advisor's training range (read
    as the range's nearest edge: :meth:`~transferscope.advise.model.Advisor.clip`); none
    when every one lay inside it.

    Parameters
    ----------
    adv : Advisor
    x : ndarray of shape (n_candidates, n_features)
        The candidates' features as computed (before clipping).
    outside : ndarray of bool, shape (n_candidates, n_features)
    models : list of str
        The candidates' names, in row order.
    """
    def size(v):  # a log size in its natural units
        return f"{np.exp(v):.0f}"

    parts = []
    for j in np.flatnonzero(np.asarray(outside).any(axis=0)):
        f, rows = adv.features[j], np.flatnonzero(outside[:, j])
        if f == "log_dim":
            have = ", ".join(f"{size(x[i, j])} ({models[i]})" for i in rows)
        else:  # the target's: the same for every candidate
            have = size(x[rows[0], j])
        parts.append(f"{_SIZES.get(f, f)} {have} (the benchmark's: {size(adv.lo[j])} to "
                     f"{size(adv.hi[j])})")
    if not parts:
        return []
    return ["range: outside the advisor's training data, read as its nearest edge (the models "
            "are not fitted beyond it): " + "; ".join(parts)]


#: The features that say how hard the target is for each candidate's untrained architecture
#: (its random-init twin's probe accuracies), in words; the advisor leaves them unclipped
#: (:meth:`~transferscope.advise.model.Advisor.clip`), so the note below says when one lies
#: beyond every benchmark cell's.
_TWIN = {"linear_probe_random": "linear-probe", "knn_random": "kNN"}


def _difficulty_notes(adv: Advisor, x, models: list[str]) -> list[str]:
    """A note (``difficulty: ...``) when some candidate's random-init twin reads the target
    with an accuracy outside the range of the advisor's training cells: a target harder (or
    easier) for the untrained architecture than any it was fitted on, where P(beats scratch)
    extrapolates along the twin accuracy's coefficient (not sign-constrained: an easier
    target helps the scratch model too).

    Parameters
    ----------
    adv : Advisor
    x : ndarray of shape (n_candidates, n_features)
        The candidates' features as computed.
    models : list of str
        The candidates' names, in row order.

    Returns
    -------
    list of str
        One note, or none when every twin accuracy lay inside the range (or the advisor
        keeps no range).
    """
    if not adv.lo:
        return []
    x = np.asarray(x, float)
    parts, sides = [], set()
    for f, words in _TWIN.items():
        j = adv.features.index(f)
        lo, hi = adv.lo[j], adv.hi[j]
        if lo is None or hi is None:
            continue
        with np.errstate(invalid="ignore"):
            below, above = x[:, j] < lo, x[:, j] > hi
        coef = adv.beats["coef"][j]  # which way this advisor moves P(beats) out there
        for rows, side, lower, step in ((np.flatnonzero(below), "harder", "lower", -1.0),
                                        (np.flatnonzero(above), "easier", "higher", 1.0)):
            if not len(rows):
                continue
            sides.add(side)
            effect = ("does not move" if abs(coef) < 1e-12 else
                      "raises" if coef * step > 0 else "lowers") + " P(beats scratch)"
            parts.append(f"the random-init twin's {words} accuracy "
                         + ", ".join(f"{x[i, j]:.3f} ({models[i]})" for i in rows)
                         + f" (the benchmark's: {lo:.3f} to {hi:.3f}; a {lower} one {effect} "
                           "in this advisor)")
    if not parts:
        return []
    return [f"difficulty: {' and '.join(sorted(sides))} for the untrained architecture than any "
            "target the advisor was fitted on, so its P(beats scratch) extrapolates: "
            + "; ".join(parts)]


def advise(data, models, *, advisor: Advisor | str | None = None, layers: bool = False,
           subsamples: int = 0, seed: int = 0, width: str | None = None, batch_size: int = 64,
           device: str | None = None, cache_dir: str | None = None) -> AdviceResult:
    """Advise on candidate models for a target: predicted fine-tuned accuracy, P(beats
    scratch), strategy, cut layer and head width.

    The candidates are ranked with their random-init twins and the raw input
    (:func:`transferscope.rank.rank`, metrics :data:`~transferscope.advise.features.METRICS`);
    the advisor (:mod:`transferscope.advise.model`, fitted on the project's benchmark unless
    another is given) turns those scores into predictions; with ``layers`` every candidate's
    layers are profiled (:func:`transferscope.layers.analyse_layers`) for the cut and head.

    Parameters
    ----------
    data : Dataset
        The target, N labelled samples.
    models : list of str or Backend
        Candidate models (at least one).
    advisor : Advisor or str, optional
        A fitted advisor or the path of its JSON (default: the shipped one).
    layers : bool
        Profile each candidate's layers for the cut layer and head width (slower); else the
        model's default layer and a linear head.
    subsamples : int
        Subsamples behind the score intervals and rank's risk label (0: the scores once; the
        advisor reads the values alone, and the risk column is empty).
    seed, batch_size, device, cache_dir
        Ranking settings (:class:`transferscope.rank.RankConfig`).
    width : str, optional
        The width transform before scoring; default: the one the advisor's training scores
        had (``trained_on["width"]``; the shipped advisor's: ``"none"``), since its features
        are those scores.

    Returns
    -------
    AdviceResult
        One row per candidate, best predicted accuracy first: ``model``, ``pred_acc`` with
        ``pred_acc_lo`` / ``pred_acc_hi`` (95 %), ``p_beats_scratch``, ``p_negative`` (of
        negative transfer: the best strategy losing to scratch beyond its interval),
        ``flag_negative`` (``p_negative`` at or above the advisor's threshold), ``strategy``,
        ``cut``, ``head_width``, ``dim``, ``risk`` (rank's label), ``evidence`` (the
        probes' accuracies and margins), ``strategy_evidence`` (each strategy's predicted
        gain over the linear probe); and, where the advisor
        has them (:mod:`transferscope.advise.model`), ``data_x`` (how many times this
        target's training data a from-scratch model would need to match the fine-tuned one)
        and ``time_x`` (scratch's training time to its selected epoch over fine-tuning's),
        each with ``_lo`` / ``_hi`` (95 %).
    """
    from transferscope.rank import rank

    adv = advisor if isinstance(advisor, Advisor) else load_advisor(advisor)
    trained_width = adv.trained_on.get("width", "none")
    width = trained_width if width is None else check_width(width)
    built = {b.name: b for b in models if not isinstance(b, str)}
    if not models:
        raise InputError("Expected at least one model to advise on, got none; e.g. "
                         "--model effnet-lite:0 --model effnet-lite:1")
    ranked = rank(data, models, metrics=METRICS, subsamples=subsamples, seed=seed,
                  baselines=True, width=width, batch_size=batch_size, device=device,
                  cache_dir=cache_dir)
    cands = _scores_of(ranked.rows, METRICS)
    if not cands:  # e.g. only random: names, which rank scores as twins, not candidates
        raise InputError(f"Expected at least one pretrained candidate model, got only "
                         f"baselines ({', '.join(r['model'] for r in ranked.rows)}); name the "
                         "pretrained models (each one's random-init twin is added for you)")
    labels = np.asarray(data.labels)
    classes = len(np.unique(labels))
    per_class = len(labels) / classes * TRAIN_SHARE
    x = candidate_features(cands, per_class, classes)
    pred = adv.predict(x, modality=data.kind)
    rows = []
    for i, c in enumerate(cands):
        per = {s: float(v[i]) for s, v in pred["strategy_acc"].items()}
        row = {"model": c["model"], "pred_acc": float(np.clip(pred["acc"][i], 0, 1)),
               "pred_acc_lo": float(np.clip(pred["acc_lo"][i], 0, 1)),
               "pred_acc_hi": float(np.clip(pred["acc_hi"][i], 0, 1)),
               "p_beats_scratch": float(pred["p_beats"][i]),
               "p_negative": float(pred["p_negative"][i]),
               "flag_negative": bool(pred["flag_negative"][i]), "strategy": pred["strategy"][i],
               "cut": None, "head_width": 0, "dim": c["dim"],
               "risk": c["rank_row"].get("risk") if subsamples else "",
               "evidence": _evidence(c),
               "strategy_evidence": ", ".join(f"{s} {v:+.3f}" for s, v in
                                              sorted(per.items(), key=lambda kv: -kv[1]))}
        for name in adv.extras:  # data_x, time_x: the savings, where the advisor has them
            for suffix in ("", "_lo", "_hi"):
                row[name + suffix] = float(pred[name + suffix][i])
        rows.append(row)
    notes = [f"{name}: the benchmark's mean over {m.get('examples')} cells for every model "
             "(its features did not predict it on held-out targets), not a per-model "
             "prediction" for name, m in adv.extras.items() if m.get("alpha") == "inf"]
    notes += _range_notes(adv, x, pred["outside"], [c["model"] for c in cands])
    notes += _difficulty_notes(adv, x, [c["model"] for c in cands])
    notes += _unlearnable_note(cands, labels)
    held = held_out_note(adv, data.kind)
    if held:
        notes.append(held)
    skipped = pred.get("unmeasured_strategies") or []
    if skipped and set(skipped) == set(adv.strategies):
        notes.append(f"strategy: no strategy of the advisor's training data was measured on "
                     f"{data.kind} targets; the pick is extrapolated from other kinds")
    elif skipped:
        notes.append(f"strategy: {', '.join(skipped)} not recommended: the advisor's training "
                     f"data measured {'it' if len(skipped) == 1 else 'them'} on "
                     + " / ".join(sorted({k for s in skipped
                                          for k in adv.strategies[s].get("modalities", [])}))
                     + f" targets only, not on {data.kind}")
    if width != trained_width:
        notes.append(f"width {width}: the scores were transformed so, the advisor was fitted on "
                     f"scores at width {trained_width} (refit it on studies scored alike: "
                     "--fit)")
    if layers:
        from transferscope.backends import FinetunableBackend, create_backend
        from transferscope.layers import analyse_layers

        for row in rows:
            b = built.get(row["model"]) or create_backend(row["model"])
            if not isinstance(b, FinetunableBackend):
                notes.append(f"{row['model']}: no layers to profile; its default layer")
                row["cut"] = b.default_layer()
                continue
            rec = analyse_layers(data, b).recommendation
            row["cut"], row["head_width"] = rec.cut, rec.head_width
    else:
        for row, c in zip(rows, cands, strict=True):
            row["cut"] = c["rank_row"]["layer"]  # the layer rank scored: no second load
        notes.append("cut: each model's default layer and a linear head (layers not profiled; "
                     "--layers profiles them)")
    rows.sort(key=lambda r: -r["pred_acc"])
    return AdviceResult(rows=rows, notes=notes, advisor={
        **adv.trained_on, "negative_threshold": adv.negative.get("threshold", 0.5)})
