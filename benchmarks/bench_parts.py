"""The benchmark's parts: one study spec each (``benchmarks/<part>.toml``), in build order.

The shipped-* parts put the models the package ships (EfficientNet-Lite0, Lite1 and Lite2,
WordLlama, MiniLM) on targets of the images and text parts: their pairs join those targets'
candidate sets. ``text-hard`` adds two later text targets (text-d of 6 classes, text-e of
general quips) with the text part's sources, in a part of its own so that the text part's
stored truth stays as measured.

:data:`PARTS` are what the shipped advisor is fitted on. :data:`MEASURED_ONLY` parts are run,
built and shown like them, but left out of the fit: ``series-ucr`` (aeon's Covid3Month_disc
with the series part's sources) is a target the FCNs hardly learn (from scratch on all its
training part 0.568 on a test set whose largest class is 0.525 of it; 61 test series), and
with it in the fit the held-out predictions on the other targets got worse in order and
calibration (``admit_check.py``; README, "The transfer benchmark").
"""

from pathlib import Path

PARTS = ("images", "series", "text", "shipped-images", "shipped-text", "shipped-images-lite1",
         "shipped-text-minilm", "shipped-images-lite2", "text-hard", "shipped-images-relabelled")
MEASURED_ONLY = ("series-ucr",)
ALL_PARTS = PARTS + MEASURED_ONLY
MODALITY = {"images": "image", "series": "series", "text": "text", "shipped-images": "image",
            "shipped-text": "text", "shipped-images-lite1": "image",
            "shipped-text-minilm": "text", "shipped-images-lite2": "image", "text-hard": "text",
            "shipped-images-relabelled": "image", "series-ucr": "series"}
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
