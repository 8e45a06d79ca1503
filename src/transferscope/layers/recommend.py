"""Recommendations from a layer profile: where to cut, how many blocks to freeze, how wide a
head, which strategy; each with the evidence and the rule that produced it.

Rules (stated with every recommendation):

- cut: the earliest layer whose primary metric (cross-validated linear-probe accuracy: what a
  head on that layer achieves) is within ``tolerance`` of the best layer's. Past it
  transferability stops improving (or falls): the blocks above it are too source-specific and
  are removed. The proxies (LogME, H-score, kNN) and their consensus are printed beside it as
  evidence (min-max normalising them over layers exaggerates small differences, so they do not
  place the cut).
- regime: the target data is *small* when it has fewer than ``small_per_class`` training
  samples per class; the source is *similar* when the primary metric (linear-probe accuracy) at
  the cut beats the random-init twin's by at least ``min_margin``.
- freeze and strategy (the four cases of the classic transfer-learning guidance):
  small + similar: linear probe (every block frozen); small + different: freeze the generic
  early blocks (up to the earliest layer at half the peak consensus score) and fine-tune the
  rest; large + similar: LP-FT, nothing frozen; large + different: full fine-tuning.
- head width: :func:`transferscope.layers.head.search_head_width` on the cut layer's features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from transferscope.layers.head import HeadSearch
from transferscope.layers.profile import LayerProfile


@dataclass
class RecommendConfig:
    """Thresholds of the recommendation rules (see the module docstring).

    Attributes
    ----------
    tolerance : float
        The cut is the earliest layer whose primary metric (probe accuracy) is within this of
        the best layer's.
    small_per_class : int
        Fewer training samples per class than this make the target *small*.
    min_margin : float
        The source is *similar* when the primary metric at the cut beats the random-init twin's
        by at least this.
    generic_level : float
        The generic blocks end at the earliest layer whose consensus score reaches this fraction
        of the peak score.
    """

    tolerance: float = 0.01  # of the primary metric (probe accuracy), for the cut
    small_per_class: int = 30
    min_margin: float = 0.05
    generic_level: float = 0.5  # consensus score that marks the end of the generic blocks


@dataclass
class Recommendation:
    """How to fine-tune one model on one target, with the evidence behind each decision.

    Attributes
    ----------
    cut : str
        The layer after which the model is truncated (the head sits on it).
    freeze : int
        Number of backbone blocks up to the cut to freeze.
    head_width : int
        Hidden units of the new head (0 = linear).
    strategy : str
        The fine-tuning strategy (``linear_probe``, ``freeze``, ``lp_ft`` or ``full``).
    strategy_options : dict
        Its options (e.g. ``probe_epochs``).
    regime : str
        ``"small|large data, similar|different"``.
    evidence : dict of str to list of str
        Per decision (``cut``, ``regime``, ``freeze``, ``head``), the lines that justify it.
    params : dict
        Parameter counts: ``model`` (whole backbone), ``cut`` (after truncation) and
        ``trainable_backbone``.
    """

    cut: str
    freeze: int
    head_width: int
    strategy: str
    strategy_options: dict
    regime: str
    evidence: dict = field(default_factory=dict)  # decision -> lines
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-able dict of every field."""
        return asdict(self)

    def command(self, data: str, model: str) -> str:
        """The ``tscope finetune`` command line that runs this recommendation.

        Parameters
        ----------
        data : str
            The dataset as given to ``--data``.
        model : str
            The model name.

        Returns
        -------
        str
        """
        opts = "".join(f" --opt {k}={v}" for k, v in self.strategy_options.items())
        freeze = f" --freeze {self.freeze}" if self.strategy == "freeze" else (
            f" --strategy {self.strategy}")
        return (f"tscope finetune --data {data} --model {model} --cut {self.cut}{freeze}"
                f" --head-width {self.head_width}{opts}")


def _n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def choose_cut(profile: LayerProfile, config: RecommendConfig | None = None) -> tuple[int, int]:
    """(index of the cut layer, index of the best layer) by the rule above; among layers whose
    primary metric ties within the tolerance, the earliest wins."""
    cfg = config or RecommendConfig()
    p = profile.primary
    primary = np.array([r[p] for r in profile.rows], dtype=float)
    score = np.array([r["score"] for r in profile.rows], dtype=float)
    top = np.nanmax(primary)
    best = max((i for i in range(len(primary)) if primary[i] == top),
               key=lambda i: (np.nan_to_num(score[i], nan=-1.0), -i))
    cut = next(i for i, v in enumerate(primary) if v >= top - cfg.tolerance)
    return cut, best


def recommend(profile: LayerProfile, backend, head: HeadSearch,
              config: RecommendConfig | None = None) -> Recommendation:
    """Apply the rules of the module docstring to a layer profile and a head search.

    Parameters
    ----------
    profile : LayerProfile
        Rows per layer, input to output, with the primary metric, the consensus ``score``, the
        random twin's primary metric and their ``margin``.
    backend : FinetunableBackend
        The profiled model (its blocks and truncation give the freeze depth and parameter
        counts; its weights are not changed).
    head : HeadSearch
        The head-width search on the cut layer's features.
    config : RecommendConfig, optional
        Thresholds (default ``RecommendConfig()``).

    Returns
    -------
    Recommendation
    """
    import copy

    cfg = config or RecommendConfig()
    rows = profile.rows
    scores = np.array([r["score"] for r in rows], dtype=float)
    peak = int(np.nanargmax(scores))
    p = profile.primary
    cut_i, best_i = choose_cut(profile, cfg)
    cut = rows[cut_i]["layer"]
    shown = ", ".join(f"{r['layer']} {r[p]:.3f}/{r['score']:.2f}" for r in rows)
    truncated = backend.truncate(copy.deepcopy(backend.module), cut)
    n_full, n_cut = _n_params(backend.module), _n_params(truncated)
    evidence = {"cut": [
        f"{p} / consensus (mean of min-max normalised {', '.join(profile.metrics)}) per "
        f"layer: {shown}",
        f"best {p} at {rows[best_i]['layer']} ({rows[best_i][p]:.3f}); earliest layer within "
        f"{cfg.tolerance:g} of it: {cut} (consensus peak: {rows[peak]['layer']})",
        f"cut after {cut}: {n_full - n_cut:,} of {n_full:,} backbone parameters removed "
        f"({100 * (n_full - n_cut) / max(n_full, 1):.0f}%)"]}

    blocks = backend.blocks(truncated, cut)
    per_class = profile.n_samples / profile.n_classes
    small = per_class < cfg.small_per_class
    margin = rows[cut_i]["margin"]
    similar = margin >= cfg.min_margin
    generic_i = next(i for i, s in enumerate(scores) if s >= cfg.generic_level * scores[peak])
    k_generic = min(len(backend.blocks(backend.module, rows[generic_i]["layer"])),
                    max(len(blocks) - 1, 0))
    if small and similar:
        strategy, freeze, options = "linear_probe", len(blocks), {}
    elif small:
        strategy, freeze, options = "freeze", k_generic, {}
    elif similar:
        strategy, freeze, options = "lp_ft", 0, {"probe_epochs": 5}
    else:
        strategy, freeze, options = "full", 0, {}
    regime = f"{'small' if small else 'large'} data, {'similar' if similar else 'different'}"
    evidence["regime"] = [
        f"{profile.n_samples} training samples, {profile.n_classes} classes: {per_class:.1f} "
        f"per class -> {'small' if small else 'large'} (< {cfg.small_per_class} per class is "
        "small)",
        f"{p} at {cut}: {rows[cut_i][p]:.3f} vs random twin {rows[cut_i][f'random_{p}']:.3f}: "
        f"margin {margin:+.3f} -> {'similar' if similar else 'different'} (similar when "
        f">= {cfg.min_margin:g})"]
    frozen = [n for n, _ in blocks[:freeze]]
    evidence["freeze"] = [
        f"{regime} -> {strategy}: freeze {freeze} of {len(blocks)} blocks up to the cut"
        + (f" ({', '.join(frozen[:4])}{' ...' if len(frozen) > 4 else ''})" if frozen else ""),
        "rule: small+similar: linear probe; small+different: freeze the generic blocks (up "
        f"to {rows[generic_i]['layer']}, the earliest layer at {cfg.generic_level:g} x the peak "
        "score); large+similar: LP-FT; large+different: full fine-tuning"]
    evidence["head"] = [
        ", ".join(f"width {r['head_width']}: val {r['val_acc']:.3f} gap {r['gap']:.3f} "
                  f"score {r['score']:.3f}" for r in head.rows),
        head.rule, f"-> head width {head.best}{' (linear)' if head.best == 0 else ''}"]
    trainable = sum(_n_params(b) for _, b in blocks[freeze:]) if strategy != "linear_probe" else 0
    return Recommendation(cut=cut, freeze=freeze, head_width=head.best, strategy=strategy,
                          strategy_options=options, regime=regime, evidence=evidence,
                          params={"model": n_full, "cut": n_cut,
                                  "trainable_backbone": trainable})
