"""Hugging Face transformers models (``hf:<local path or hub id>``) for text.

Text is tokenised in length-sorted batches with dynamic padding and mean-pooled over the
attention mask, from any hidden layer (``hidden.0`` = embeddings ... ``hidden.L`` = last).
A local path loads offline; a hub id works where the network allows it. Remote code is never
trusted unless ``trust_remote_code=True`` is passed explicitly to :class:`HFTextBackend`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from transferscope.backends.base import Backend, register_backend, weights_digest
from transferscope.errors import InputError, require


class HFTextBackend(Backend):
    modalities = ("text",)

    def __init__(self, source: str, *, max_length: int = 256, trust_remote_code: bool = False,
                 module=None, name=None):
        transformers = require("transformers", "hf", "Hugging Face models")
        transformers.utils.logging.disable_progress_bar()
        local = Path(source).exists()
        kw = {"local_files_only": local, "trust_remote_code": trust_remote_code}
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kw)
            self.module = module if module is not None else (
                transformers.AutoModel.from_pretrained(source, **kw).eval())
        except OSError as exc:
            raise InputError(
                f"Expected a Hugging Face model folder or reachable hub id, got {source!r} "
                f"({str(exc).splitlines()[0][:120]}); pass a local path for offline use"
            ) from None
        self.name = name or f"hf:{source}"
        self.source = source
        self.max_length = max_length
        self.n_layers = int(self.module.config.num_hidden_layers)
        self._digest = None

    def layers(self):
        return [f"hidden.{i}" for i in range(self.n_layers + 1)]

    def default_layer(self):
        return f"hidden.{self.n_layers}"

    def identity(self):
        if self._digest is None:
            self._digest = weights_digest(self.module.state_dict())
        tok = hashlib.sha256(repr(self.tokenizer.get_vocab().__len__()).encode()).hexdigest()[:6]
        return f"{self.name}|w={self._digest}|tok={tok}|max_len={self.max_length}|mean-pool"

    def features(self, data, layers, *, batch_size=64, device=None, progress=None):
        self.check_input(data)
        self.check_layers(layers)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        module = self.module.to(device)
        texts = list(data.inputs)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together
        index = [int(layer.split(".")[1]) for layer in layers]
        out = {layer: np.empty((len(texts), module.config.hidden_size), np.float32)
               for layer in layers}
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                enc = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(device)
                hidden = module(**enc, output_hidden_states=True).hidden_states
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden[0].dtype)
                for layer, i in zip(layers, index, strict=True):
                    pooled = (hidden[i] * mask).sum(1) / mask.sum(1).clamp(min=1)
                    out[layer][rows] = pooled.float().cpu().numpy()
                if progress is not None:
                    progress(min(len(texts), start + batch_size), len(texts))
        return out


@register_backend("hf")
def _hf(arg: str):
    if not arg:
        raise InputError("Expected hf:<local path or hub id>, got an empty name")
    return HFTextBackend(arg)
