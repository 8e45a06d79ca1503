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
import json
import os
from pathlib import Path

import numpy as np
import torch

from transferscope.backends.base import FinetunableBackend, register_backend, weights_digest
from transferscope.backends.torch_module import forward_error, resolve_device
from transferscope.errors import InputError, first_line, require


def _quiet_hub() -> None:
    """Silence huggingface_hub's retry and progress messages (errors come as one line)."""
    try:
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers depends on it
        pass


def _looks_like_path(source: str) -> bool:
    """A folder name rather than a hub id (``org/name`` or ``name``)."""
    return (os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") > 1
            or (os.sep != "/" and os.sep in source))


def _check_source(source: str) -> bool:
    """True for a usable local model folder; one-line errors for a bad one."""
    path = Path(source).expanduser()
    if not path.exists():
        if _looks_like_path(source):
            raise InputError(f"Expected a Hugging Face model folder or hub id, got {source!r}: "
                             "no such folder; check the path")
        return False
    if not path.is_dir():
        raise InputError(f"Expected a Hugging Face model folder (with config.json), got the "
                         f"file {source!r}; pass the folder that save_pretrained wrote")
    config = path / "config.json"
    if not config.is_file():
        raise InputError(f"Expected a Hugging Face model folder with config.json, got "
                         f"{source!r} without one; pass the folder that save_pretrained wrote")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Expected JSON in {config}, got a file that does not parse "
                         f"({first_line(exc)}); re-save the model with save_pretrained") from None
    if not isinstance(cfg, dict):
        raise InputError(f"Expected a JSON object in {config}, got a JSON "
                         f"{type(cfg).__name__}; re-save the model with save_pretrained")
    return True


def _offline() -> bool:
    flags = [os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")]
    try:
        from huggingface_hub import constants

        flags.append(str(constants.HF_HUB_OFFLINE))
    except ImportError:  # pragma: no cover
        pass
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers at all (a quick check instead of minutes of retries)."""
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except ImportError:  # pragma: no cover
        endpoint = "https://huggingface.co"
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hub_cached(transformers, source: str, trust_remote_code: bool) -> bool:
    """True when hub id ``source`` is in the local cache (it loads offline); when it is not,
    the hub must be reachable, else a one-line error says that only cached models load."""
    try:
        transformers.AutoConfig.from_pretrained(source, local_files_only=True,
                                                trust_remote_code=trust_remote_code)
        return True
    except Exception:  # noqa: BLE001 - not cached (or not a hub id at all)
        pass
    reason = ("HF_HUB_OFFLINE=1 is set" if _offline() else
              "the hub is unreachable" if not _hub_reachable() else None)
    if reason is not None:
        raise InputError(
            f"Expected a local model folder or a hub id in the local cache, got {source!r}, "
            f"which is not cached ({reason}); only cached models load offline "
            f"(HF_HUB_OFFLINE=1): download it once where the hub is reachable (hf download "
            f"{source}) or pass the folder it was saved to"
        )
    return False


def _pool_hidden(h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    if h.dim() == 4:  # (B, C, H, W) feature maps
        return h.mean(dim=(2, 3))
    if mask is not None:
        return (h * mask).sum(1) / mask.sum(1).clamp(min=1)
    return h.mean(dim=1)  # (B, T, C) tokens


def _uint8_image(a) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 pixels of an image: one channel squeezed, floats in [0, 1]
    scaled to 0-255 (others clipped to 0-255)."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype == np.uint8:
        return a
    floating = np.issubdtype(a.dtype, np.floating)
    a = a.astype(np.float64)
    if floating and a.size and np.nanmax(a) <= 1.0:
        a = a * 255.0
    return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)


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
        _quiet_hub()
        local = module is None and _check_source(source)
        kw = {"local_files_only": True, "trust_remote_code": trust_remote_code}
        if module is None and not local:
            kw["local_files_only"] = _hub_cached(transformers, source, trust_remote_code)
        try:
            self.module = module if module is not None else (
                transformers.AutoModel.from_pretrained(source, **kw).eval())
        except Exception as exc:  # noqa: BLE001 - transformers raises many types for bad folders
            raise InputError(
                f"Expected a Hugging Face model that transformers {transformers.__version__} "
                f"loads from {source!r}, got {type(exc).__name__}: {first_line(exc)}; check "
                "config.json (model_type) and that the weights beside it were written by "
                "save_pretrained"
            ) from None
        self.tokenizer = self.processor = None
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kw)
        except Exception:  # noqa: BLE001 - no tokenizer: try an image processor
            try:
                self.processor = transformers.AutoImageProcessor.from_pretrained(source, **kw)
            except Exception:  # noqa: BLE001 - neither: refused below
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
        n_layers = getattr(cfg, "num_hidden_layers", None) or (len(depths) if depths else None)
        if not n_layers:
            raise InputError(
                f"Expected a model with a stack of hidden layers in {source!r} "
                f"(num_hidden_layers or depths in its config), got a "
                f"{getattr(cfg, 'model_type', '?')} config without; pass its text or vision "
                "tower saved on its own"
            )
        self.n_layers = int(n_layers)
        self._digest = None

    def layers(self):
        """The hidden states ``hidden.0`` (embeddings) ... ``hidden.L`` (last layer)."""
        return [f"hidden.{i}" for i in range(self.n_layers + 1)]

    def default_layer(self):
        """``hidden.L``, the last hidden state."""
        return f"hidden.{self.n_layers}"

    def identity(self):
        """Name, weights digest, structure digest (``repr`` of the module), tokenizer
        (vocabulary size, max length) or image-processor digest, and the pooling."""
        if self._digest is None:  # hashed once (a twin resets it: new weights)
            self._digest = (weights_digest(self.module.state_dict()),
                            hashlib.sha256(repr(self.module).encode()).hexdigest()[:12])
        weights, structure = self._digest
        if self.tokenizer is not None:
            pre = f"tok={len(self.tokenizer.get_vocab())}|max_len={self.max_length}"
        else:
            pre = "proc=" + hashlib.sha256(self.processor.to_json_string().encode()).hexdigest()[:8]
        return f"{self.name}|w={weights}|s={structure}|{pre}|mean-pool"

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
                try:
                    hidden, mask = self._forward(module, [data.inputs[i] for i in rows], device)
                except InputError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the model's forward pass failed
                    shape = (len(rows), *np.shape(data.inputs[rows[0]]))
                    raise forward_error(self.name, np.empty(shape), exc, data.kind) from None
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

        images = [Image.fromarray(_uint8_image(a)).convert("RGB") for a in batch]
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
