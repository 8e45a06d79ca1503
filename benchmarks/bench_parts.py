"""The benchmark's parts: one study spec each (``benchmarks/<part>.toml``), in build order.

The shipped-* parts put the models the package ships (EfficientNet-Lite0, Lite1 and Lite2,
WordLlama, MiniLM) on targets of the images and text parts: their pairs join those targets'
candidate sets. ``text-hard`` adds a harder text target (6 classes) with the text part's
sources, in a part of its own so that the text part's stored truth stays as measured.
"""

from pathlib import Path

PARTS = ("images", "series", "text", "shipped-images", "shipped-text", "shipped-images-lite1",
         "shipped-text-minilm", "shipped-images-lite2", "text-hard")
MODALITY = {"images": "image", "series": "series", "text": "text", "shipped-images": "image",
            "shipped-text": "text", "shipped-images-lite1": "image",
            "shipped-text-minilm": "text", "shipped-images-lite2": "image", "text-hard": "text"}
ROOT = Path(__file__).resolve().parent.parent


def make_store(root: Path = ROOT) -> Path:
    """The folder the parts' specs keep their runs in (their ``db``,
    ``benchmarks/store/<part>.db`` under the repository root), made if missing: a fresh clone
    has none.

    Parameters
    ----------
    root : Path
        The repository root.

    Returns
    -------
    Path
        ``root / "benchmarks" / "store"``.
    """
    store = Path(root) / "benchmarks" / "store"
    store.mkdir(parents=True, exist_ok=True)
    return store
