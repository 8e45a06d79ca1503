"""One call from data and model to profile, head search and recommendation."""

from __future__ import annotations

from dataclasses import dataclass

from transferscope.backends import create_backend
from transferscope.data import Dataset, training_part
from transferscope.features import FeatureCache, extract_features
from transferscope.layers.head import WIDTHS, HeadSearch, search_head_width
from transferscope.layers.profile import LayerProfile, ProfileConfig, layer_profile
from transferscope.layers.recommend import (
    Recommendation,
    RecommendConfig,
    choose_cut,
    recommend,
)


@dataclass
class LayerAnalysis:
    """Everything :func:`analyse_layers` found about one model on one target.

    Attributes
    ----------
    profile : LayerProfile
        Per-layer transferability of the model and of its random-init twin.
    head : HeadSearch
        The head-width search on the cut layer's features.
    recommendation : Recommendation
        Cut, freeze depth, head width and strategy, with their evidence.
    """

    profile: LayerProfile
    head: HeadSearch
    recommendation: Recommendation

    def to_dict(self) -> dict:
        """A JSON-able dict: ``profile``, ``head_search`` (rows), ``head_rule`` and
        ``recommendation``.
        """
        return {"profile": self.profile.to_dict(), "head_search": self.head.rows,
                "head_rule": self.head.rule, "recommendation": self.recommendation.to_dict()}


def analyse_layers(data: Dataset, model, *, profile: ProfileConfig | None = None,
                   rules: RecommendConfig | None = None, widths=WIDTHS) -> LayerAnalysis:
    """Profile every layer of ``model`` on ``data``, search a head width and recommend a cut,
    freeze depth, head width and strategy.

    Only the training part of the seeded fine-tuning split is looked at (see
    :func:`transferscope.data.training_part`); the head is searched on the cut layer's features,
    read from the feature cache the profile filled.

    Parameters
    ----------
    data : Dataset
        The labelled target data, N samples.
    model : str or FinetunableBackend
        A model name or a built backend whose weights can train.
    profile : ProfileConfig, optional
        Metrics, layers, seeds and feature-extraction settings (default ``ProfileConfig()``).
    rules : RecommendConfig, optional
        Thresholds of the recommendation rules (default ``RecommendConfig()``).
    widths : sequence of int
        Head widths to try (0 = linear).

    Returns
    -------
    LayerAnalysis
    """
    backend = create_backend(model) if isinstance(model, str) else model
    pcfg = profile or ProfileConfig()
    prof = layer_profile(data, backend, pcfg)
    rcfg = rules or RecommendConfig()
    # the head is searched on the cut layer's features (cached by the profile), train part only
    cut = prof.rows[choose_cut(prof, rcfg)[0]]["layer"]
    part = training_part(data, pcfg.split_seed)
    feats = extract_features(backend, part, [cut], cache=FeatureCache(pcfg.cache_dir),
                             batch_size=pcfg.batch_size, device=pcfg.device,
                             num_workers=pcfg.num_workers, precision=pcfg.precision)[cut]
    head = search_head_width(feats, part.labels, widths=widths, seed=pcfg.seed)
    return LayerAnalysis(prof, head, recommend(prof, backend, head, rcfg))
