"""Hugging Face transformers models (``hf:<local path or hub id>``): text and image.

Text (the folder has a tokenizer): tokenised in length-sorted batches with dynamic padding and
mean-pooled over the attention mask. Images (the folder has an image processor): the model's own
processor (resize, normalise), then token hidden states are averaged (ViT-like models) or feature
maps globally average-pooled (convolutional models). Layers are the hidden states,
``hidden.0`` (embeddings) ... ``hidden.L`` (last, the default).

A local path loads offline; a hub id works where the network allows it. Remote code is never
trusted unless ``trust_remote_code=True`` is passed explicitly to :class:`HFBackend`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from transferscope.backends.base import FinetunableBackend, register_backend, weights_digest
from transferscope.backends.torch_module import resolve_device
from transferscope.errors import InputError, require


def _pool_hidden(h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    if h.dim() == 4:  # (B, C, H, W) feature maps
        return h.mean(dim=(2, 3))
    if mask is not None:
        return (h * mask).sum(1) / mask.sum(1).clamp(min=1)
    return h.mean(dim=1)  # (B, T, C) tokens


class HFBackend(FinetunableBackend):
    """A Hugging Face model folder (or cached hub id) with its tokenizer or image processor.

    Parameters
    ----------
    source : str
        Local folder or hub id.
    max_length : int
        Token limit for text.
    trust_remote_code : bool
        Run code shipped with the model (never by default).
    module : torch.nn.Module, optional
        An already loaded model.
    name : str, optional
        The model name (default ``hf:<source>``).
    """

    def __init__(self, source: str, *, max_length: int = 256, trust_remote_code: bool = False,
                 module=None, name=None):
        transformers = require("transformers", "hf", "Hugging Face models")
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        kw = {"local_files_only": Path(source).exists(), "trust_remote_code": trust_remote_code}
        try:
            self.module = module if module is not None else (
                transformers.AutoModel.from_pretrained(source, **kw).eval())
        except OSError as exc:
            raise InputError(
                f"Expected a Hugging Face model folder or reachable hub id, got {source!r} "
                f"({str(exc).splitlines()[0][:120]}); pass a local path for offline use"
            ) from None
        self.tokenizer = self.processor = None
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kw)
        except (OSError, ValueError, KeyError, TypeError):
            try:
                self.processor = transformers.AutoImageProcessor.from_pretrained(source, **kw)
            except (OSError, ValueError, KeyError, TypeError):
                pass
        if self.tokenizer is None and self.processor is None:
            raise InputError(
                f"Expected a tokenizer or an image processor with {source!r}, got neither; "
                "save one beside the model (save_pretrained)"
            )
        self.modalities = ("text",) if self.tokenizer is not None else ("image",)
        self.name = name or f"hf:{source}"
        self.source = source
        self.max_length = max_length
        cfg = self.module.config
        depths = getattr(cfg, "depths", None)
        self.n_layers = int(getattr(cfg, "num_hidden_layers", None) or len(depths))
        self._digest = None

    def layers(self):
        """The hidden states ``hidden.0`` (embeddings) ... ``hidden.L`` (last layer)."""
        return [f"hidden.{i}" for i in range(self.n_layers + 1)]

    def default_layer(self):
        """``hidden.L``, the last hidden state."""
        return f"hidden.{self.n_layers}"

    def identity(self):
        """Name, weights digest, tokenizer (vocabulary size, max length) or image-processor
        digest, and the pooling."""
        if self._digest is None:
            self._digest = weights_digest(self.module.state_dict())
        if self.tokenizer is not None:
            pre = f"tok={len(self.tokenizer.get_vocab())}|max_len={self.max_length}"
        else:
            pre = "proc=" + hashlib.sha256(self.processor.to_json_string().encode()).hexdigest()[:8]
        return f"{self.name}|w={self._digest}|{pre}|mean-pool"

    def features(self, data, layers, *, batch_size=64, device=None, progress=None):
        """Pooled hidden states (see :meth:`Backend.features`).

        Text is tokenised in length-sorted batches with dynamic padding and mean-pooled over
        the attention mask; images go through the model's processor, then tokens are averaged
        or feature maps globally average-pooled. Rows come back in the dataset's order.

        Returns
        -------
        dict of str to ndarray of shape (N, D_layer)
            float32 features of the N samples for each requested layer.
        """
        self.check_input(data)
        self.check_layers(layers)
        device = resolve_device(device)
        module = self.module.to(device)
        n = len(data)
        if self.tokenizer is not None:  # similar lengths together: less padding
            order = np.argsort([len(t) for t in data.inputs], kind="stable")
        else:
            order = np.arange(n)
        index = [int(layer.split(".")[1]) for layer in layers]
        out: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                rows = order[start : start + batch_size]
                hidden, mask = self._forward(module, [data.inputs[i] for i in rows], device)
                for layer, i in zip(layers, index, strict=True):
                    pooled = _pool_hidden(hidden[i], mask).float().cpu().numpy()
                    if layer not in out:
                        out[layer] = np.empty((n, pooled.shape[1]), np.float32)
                    out[layer][rows] = pooled
                if progress is not None:
                    progress(min(n, start + batch_size), n)
        return out

    # -- fine-tuning interface (see FinetunableBackend) --
    def prepare(self, batch, data) -> torch.Tensor:
        """Text: (B, 2, max_length) int64 token ids and attention mask (trimmed to the longest
        sample of each batch in ``feature_fn``); images: the processor's pixel values."""
        if self.tokenizer is not None:
            enc = self.tokenizer([str(t) for t in batch], padding="max_length", truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1)
        from PIL import Image

        images = [Image.fromarray(np.asarray(a, dtype=np.uint8)).convert("RGB") for a in batch]
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def feature_fn(self, module, layer, *, cut: bool = False):
        """``x -> (B, D)``: differentiable pooled hidden state ``layer`` of ``module`` (see
        :meth:`FinetunableBackend.feature_fn`).

        ``x`` is what :meth:`prepare` returns: for text, (B, 2, max_length) token ids and
        attention mask, trimmed to the batch's longest sample and mean-pooled over the mask; for
        images, (B, 3, H, W) pixel values. ``cut`` is accepted for the common interface: a
        truncated module (:meth:`truncate`) already ends at the layer.
        """
        i = int(layer.split(".")[1])  # a truncated module has exactly i layers: the last one

        def run(x):
            if self.tokenizer is None:
                return _pool_hidden(module(pixel_values=x, output_hidden_states=True)
                                    .hidden_states[i])
            mask = x[:, 1]
            length = max(1, int(mask.sum(1).max()))
            ids, mask = x[:, 0, :length], mask[:, :length]
            hidden = module(input_ids=ids, attention_mask=mask,
                            output_hidden_states=True).hidden_states[i]
            return _pool_hidden(hidden, mask.unsqueeze(-1).to(hidden.dtype))

        return run

    def _stack(self, module):
        """(name, ModuleList) of the transformer's layer stack in ``module`` (a copy of
        ``self.module``, perhaps truncated); found by its length in the untouched original."""
        name = next((n for n, m in self.module.named_modules()
                     if isinstance(m, torch.nn.ModuleList) and len(m) == self.n_layers), None)
        if name is None:
            raise InputError(f"Expected a stack of {self.n_layers} layers in {self.name!r}, got "
                             "none; freezing or cutting by layer needs it (use full or "
                             "linear_probe)")
        return name, module.get_submodule(name)

    def truncate(self, module, layer):
        """Keep the first ``i`` layers for a cut at ``hidden.i`` (in place); modules after the
        stack (pooler, final norm) become ``nn.Identity``: they do not shape hidden states."""
        i = int(layer.split(".")[1])
        stack_name, stack = self._stack(module)
        parent, _, attr = stack_name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, attr,
                torch.nn.ModuleList(list(stack)[:i]))
        if hasattr(module.config, "num_hidden_layers"):
            module.config.num_hidden_layers = i
        top, after = stack_name.split(".")[0], False
        for name, _ in list(module.named_children()):
            if after:
                setattr(module, name, torch.nn.Identity())
            after = after or name == top
        return module

    def blocks(self, module, layer):
        """The modules before the layer stack (embeddings), then the first ``i`` layers for a
        cut at ``hidden.i``; modules after the stack (pooler, final norm) do not shape the
        hidden states and are left out."""
        stack_name, stack = self._stack(module)
        i = int(layer.split(".")[1])
        top = stack_name.split(".")[0]
        before = []
        for name, child in module.named_children():
            if name == top:
                break
            before.append((name, child))
        layers = [(f"{stack_name}.{j}", stack[j]) for j in range(i)]
        return [(n, b) for n, b in before + layers if next(b.parameters(), None) is not None]

    def _forward(self, module, items, device):
        if self.tokenizer is not None:
            enc = self.tokenizer(items, padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(device)
            hidden = module(**enc, output_hidden_states=True).hidden_states
            return hidden, enc["attention_mask"].unsqueeze(-1).to(hidden[0].dtype)
        pixels = self.prepare(items, None).to(device)
        return module(pixel_values=pixels, output_hidden_states=True).hidden_states, None


@register_backend("hf")
def _hf(name):
    arg = name.arg if name.size is None else f"{name.arg}@{name.size}"
    if not arg:
        raise InputError("Expected hf:<local path or hub id>, got an empty name")
    return HFBackend(arg)
