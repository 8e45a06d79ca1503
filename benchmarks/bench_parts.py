"""The benchmark's parts: one study spec each (``benchmarks/<part>.toml``), in build order.

The shipped-* parts put the models the package ships (EfficientNet-Lite0, WordLlama) on targets
of the images and text parts: their pairs join those targets' candidate sets.
"""

PARTS = ("images", "series", "text", "shipped-images", "shipped-text")
MODALITY = {"images": "image", "series": "series", "text": "text", "shipped-images": "image",
            "shipped-text": "text"}
