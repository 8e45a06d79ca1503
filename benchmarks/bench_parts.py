"""The benchmark's parts: one study spec each (``benchmarks/<part>.toml``), in build order.

The shipped-* parts put the models the package ships (EfficientNet-Lite0 and Lite1, WordLlama) on
targets of the images and text parts: their pairs join those targets' candidate sets.
"""

PARTS = ("images", "series", "text", "shipped-images", "shipped-text", "shipped-images-lite1")
MODALITY = {"images": "image", "series": "series", "text": "text", "shipped-images": "image",
            "shipped-text": "text", "shipped-images-lite1": "image"}
