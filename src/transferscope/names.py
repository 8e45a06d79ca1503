"""The one grammar of model names, parsed in one place.

::

    name     := "raw" | "random:" name | "pretrained:" STUDY-ENTRY | backend ":" arg ["@" at]
    backend  := a registered backend prefix (effnet-lite, hf, torch, timm, torchvision,
                wordllama, zoo)
    at       := digits (an input size: effnet-lite:0@96) or a checkpoint path (torch:...@w.pt)

``random:<model>`` is the model's random-init twin (same architecture and preprocessing),
``raw`` the input itself, and ``pretrained:<name>`` (studies only) a source that a study's
``[[pretrain]]`` entry trains first. Rank, layers, finetune, study specs and the CLI all read
names through :func:`parse_model_name`; no caller inspects prefixes itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from transferscope.errors import InputError

RAW = "raw"
RANDOM = "random:"
PRETRAINED = "pretrained:"


@dataclass(frozen=True)
class ModelName:
    """A parsed model name.

    Attributes
    ----------
    text : str
        The name as given.
    backend : str
        The backend prefix (``"raw"`` for the raw baseline, ``"pretrained"`` for a study's
        pretrain entry).
    arg : str
        What follows ``backend:``, without a trailing ``@size`` (a checkpoint stays in it).
    size : int or None
        The input size of ``<name>@<digits>``.
    random : bool
        Whether this is ``random:<inner>``, the random-init twin of :attr:`inner`.
    inner : ModelName or None
        The wrapped name of a random twin.
    """

    text: str
    backend: str
    arg: str = ""
    size: int | None = None
    random: bool = False
    inner: ModelName | None = None

    @property
    def role(self) -> str:
        """``"candidate"``, ``"random-twin"`` or ``"raw-baseline"``: what rank makes of it."""
        if self.random:
            return "random-twin"
        return "raw-baseline" if self.backend == "raw" else "candidate"

    @property
    def is_baseline(self) -> bool:
        """True for ``raw`` and ``random:<model>``."""
        return self.role != "candidate"

    @property
    def is_pretrained_entry(self) -> bool:
        """True for a study's ``pretrained:<name>`` source."""
        return self.backend == "pretrained"

    def twin(self) -> str:
        """The name of this model's random-init twin."""
        return f"{RANDOM}{self.text}"

    def short(self, width: int = 44) -> str:
        """The name shortened to ``width`` characters for tables, prefixes kept visible."""
        if len(self.text) <= width:
            return self.text
        prefix, name = "", self
        while name.random:
            prefix, name = prefix + RANDOM, name.inner
        prefix += f"{name.backend}:"
        rest = self.text[len(prefix):]
        return prefix + "..." + rest[-(width - len(prefix) - 3):]

    def __str__(self) -> str:
        return self.text


def parse_model_name(text: str) -> ModelName:
    """Parse a model name (see the module docstring for the grammar).

    Parameters
    ----------
    text : str
        E.g. ``"effnet-lite:0@96"``, ``"random:hf:/models/minilm"``, ``"raw"``,
        ``"torch:net.py:build@weights.safetensors"``.

    Returns
    -------
    ModelName

    Raises
    ------
    InputError
        For an empty name, ``raw:<anything>`` or a name without ``backend:``.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"Expected a model name such as effnet-lite:0, got {text!r}")
    text = text.strip()
    if text.startswith(RANDOM):
        inner = parse_model_name(text[len(RANDOM):])
        if inner.backend == "raw":
            raise InputError("Expected a model with weights after 'random:', got 'raw'")
        return ModelName(text, inner.backend, inner.arg, inner.size, True, inner)
    if text == RAW:
        return ModelName(text, "raw")
    backend, sep, arg = text.partition(":")
    if backend == "raw":
        raise InputError(f"Expected plain 'raw', got {text!r}")
    if not sep:
        raise InputError(f"Expected a model name <backend>:<model> (or raw), got {text!r}; "
                         "e.g. effnet-lite:0, hf:/path/to/model, torch:net.py:build")
    size = None
    head, at, tail = arg.rpartition("@")
    if at and tail.isdigit():
        arg, size = head, int(tail)
    return ModelName(text, backend, arg, size)
