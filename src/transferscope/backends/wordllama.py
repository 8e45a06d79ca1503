"""WordLlama: static token embeddings distilled from a large language model's input embedding
table, averaged over a text's tokens (Miller 2024, the ``wordllama`` package; Model2Vec-style
static embeddings, Tulkens & van Dongen 2024).

``wordllama:<config>`` (e.g. ``wordllama:l2_supercat``) loads the weights and the tokenizer
that the installed ``wordllama`` wheel ships (``weights/<config>_<dim>.safetensors``,
``tokenizers/<config>_tokenizer_config.json``); nothing is downloaded. The files are read
directly (safetensors and the ``tokenizers`` library), without importing the package, so its
download code never runs.

The model is a torch module, so it is scored, profiled and fine-tuned like any other:
token ids -> embedding table (V, D) -> mean over the text's tokens (attention mask) -> (B, D),
exactly WordLlama's ``embed(..., norm=False)``: no special tokens, no truncation beyond
``max_length`` tokens. Its one layer is ``pool`` (the pooled embedding, also ``output``); its
random-init twin re-draws the table from N(0, 1), as ``nn.Embedding`` starts training.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferscope.backends.base import register_backend
from transferscope.backends.hf import pool_hidden, used_columns
from transferscope.backends.torch_module import TorchModuleBackend
from transferscope.errors import InputError, OptionalDependencyError, require

#: tokens read per text (WordLlama itself does not truncate; texts beyond this are cut)
DEFAULT_MAX_LENGTH = 512


class MaskedMean(nn.Module):
    """Mean of token vectors over the tokens a mask keeps: (B, L, D), (B, L) -> (B, D)."""

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, D) token vectors, (B, L) mask -> (B, D); a text without tokens gives 0."""
        return pool_hidden(h, mask)


class StaticEmbedding(nn.Module):
    """A static-embedding text encoder: an embedding table and a masked mean.

    Parameters
    ----------
    weight : torch.Tensor of shape (V, D)
        The token embedding table.

    Notes
    -----
    ``forward(x)`` takes ``x`` of shape (B, 2, L): token ids and attention mask stacked (what
    :meth:`WordLlamaBackend.prepare` returns) and returns (B, D). Columns no text of the
    batch uses are dropped first, so padding to ``max_length`` costs nothing.
    """

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.embedding = nn.Embedding.from_pretrained(weight.float(), freeze=False)
        self.pool = MaskedMean()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, L) token ids and mask -> (B, D) pooled embeddings."""
        ids, mask = used_columns(x[:, 0], x[:, 1])
        return self.pool(self.embedding(ids), mask)


def package_dir() -> Path:
    """The installed ``wordllama`` package's folder (its shipped weights and tokenizers)."""
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise OptionalDependencyError(
            "WordLlama models need the optional package 'wordllama', which is not installed; "
            "install it with: pip install 'transferscope[wordllama]'")
    return Path(list(spec.submodule_search_locations)[0])


def shipped_configs() -> dict[str, Path]:
    """``{config: weights file}`` of the WordLlama weights the installed wheel ships (the widest
    float file per config)."""
    out: dict[str, tuple[int, Path]] = {}
    for f in sorted((package_dir() / "weights").glob("*.safetensors")):
        config, _, dim = f.stem.rpartition("_")
        if config and dim.isdigit() and int(dim) > out.get(config, (0, f))[0]:
            out[config] = (int(dim), f)
    return {k: v[1] for k, v in sorted(out.items())}


def load_wordllama(config: str) -> tuple[torch.Tensor, object, str]:
    """The embedding table, tokenizer and tokenizer digest of a shipped WordLlama config.

    Parameters
    ----------
    config : str
        A config whose weights the installed wheel ships (e.g. ``"l2_supercat"``).

    Returns
    -------
    weight : torch.Tensor of shape (V, D)
        The token embedding table (float32).
    tokenizer : tokenizers.Tokenizer
        Its tokenizer.
    digest : str
        12 hex digits of the tokenizer file (part of the model's identity).

    Raises
    ------
    InputError
        For a config the wheel does not ship (the message lists those it does), or a table
        whose rows do not match the tokenizer's vocabulary.
    """
    configs = shipped_configs()
    if config not in configs:
        raise InputError(f"Expected wordllama:<config> with a config whose weights the installed "
                         f"wordllama ships ({', '.join(configs) or 'none'}), got "
                         f"wordllama:{config}; pick one of those")
    safetensors = require("safetensors.torch", "wordllama", "WordLlama models")
    tokenizers = require("tokenizers", "wordllama", "WordLlama models")
    tables = safetensors.load_file(str(configs[config]))
    key = "embedding.weight" if "embedding.weight" in tables else next(iter(tables))
    weight = tables[key].float()
    tok_file = package_dir() / "tokenizers" / f"{config}_tokenizer_config.json"
    if not tok_file.exists():
        raise InputError(f"Expected WordLlama's tokenizer at {tok_file}, got no file; "
                         "reinstall wordllama")
    tokenizer = tokenizers.Tokenizer.from_file(str(tok_file))
    if tokenizer.get_vocab_size() > weight.shape[0]:
        raise InputError(f"Expected an embedding table of at least {tokenizer.get_vocab_size()} "
                         f"rows (the tokenizer's vocabulary) in {configs[config]}, got "
                         f"{weight.shape[0]}; reinstall wordllama")
    digest = hashlib.sha256(tok_file.read_bytes()).hexdigest()[:12]
    return weight, tokenizer, digest


class WordLlamaBackend(TorchModuleBackend):
    """A WordLlama model (see the module docstring); layer ``pool``, (B, D) pooled embeddings.

    Parameters
    ----------
    config : str
        The shipped config (``wordllama:<config>``).
    max_length : int
        Tokens read per text.
    """

    modalities = ("text",)
    accepts_preprocessing = False

    def __init__(self, config: str, *, max_length: int = DEFAULT_MAX_LENGTH):
        weight, self.tokenizer, self._tok_digest = load_wordllama(config)
        self.max_length = int(max_length)
        super().__init__(f"wordllama:{config}", StaticEmbedding(weight), block_names=["pool"],
                         default="pool")

    def identity(self) -> str:
        """The module's identity (weights, structure) plus the tokenizer and length read."""
        return (f"{super().identity()}|tok={self._tok_digest}|max_len={self.max_length}")

    def prepare(self, batch, data) -> torch.Tensor:
        """(B, 2, max_length) int64: token ids (no special tokens, as WordLlama embeds) and
        attention mask, right-padded with id 0 under a zero mask."""
        encodings = self.tokenizer.encode_batch([str(t) for t in batch],
                                                add_special_tokens=False)
        out = np.zeros((len(encodings), 2, self.max_length), dtype=np.int64)
        for i, enc in enumerate(encodings):
            ids = enc.ids[: self.max_length]
            out[i, 0, : len(ids)] = ids
            out[i, 1, : len(ids)] = 1
        return torch.from_numpy(out)


@register_backend("wordllama")
def _wordllama(name):
    if not name.arg or name.size is not None or "@" in name.arg:
        raise InputError(f"Expected wordllama:<config> (e.g. wordllama:l2_supercat), got "
                         f"{name.text}")
    return WordLlamaBackend(name.arg)
