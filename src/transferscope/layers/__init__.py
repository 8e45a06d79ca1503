"""Layer-wise analysis: a transferability profile over every block, recommendations for the
cut, freeze depth, head width and strategy, and their verification by fine-tuning."""

from transferscope.layers.analysis import LayerAnalysis, analyse_layers
from transferscope.layers.cka import linear_cka
from transferscope.layers.head import HeadSearch, search_head_width
from transferscope.layers.profile import LayerProfile, ProfileConfig, layer_profile
from transferscope.layers.recommend import (
    Recommendation,
    RecommendConfig,
    choose_cut,
    recommend,
)
from transferscope.layers.verify import verify

__all__ = ["HeadSearch", "LayerAnalysis", "LayerProfile", "ProfileConfig", "Recommendation",
           "RecommendConfig", "analyse_layers", "choose_cut", "layer_profile", "linear_cka",
           "recommend", "search_head_width", "verify"]
