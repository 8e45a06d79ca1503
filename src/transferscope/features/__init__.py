"""Feature extraction from chosen layers, with a content-addressed, verified cache."""

from transferscope.features.cache import FeatureCache, cache_key, default_cache_dir
from transferscope.features.extract import extract_features, extract_source_probs, logits_to_probs

__all__ = ["FeatureCache", "cache_key", "default_cache_dir", "extract_features",
           "extract_source_probs", "logits_to_probs"]
