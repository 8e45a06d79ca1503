"""Hugging Face transformers models (``hf:<local path or hub id>[:text|:vision]``).

What a folder holds decides what is loaded (its ``config.json``, ``modules.json``):

* **Image models** (ViT, DINOv2, ConvNeXt, ResNet, Swin, ...): the folder's own image
  processor prepares the pixels (resize, crop, normalise). Layers are the hidden states,
  ``hidden.0`` (embeddings or stem) ... ``hidden.L``: one per transformer block (ViT, DINOv2)
  or per stage (ConvNeXt, ResNet, Swin; a Swin stage's state is recorded after its patch
  merging, as transformers records it). Token states are averaged over all tokens (global
  average pooling, which Dosovitskiy et al., ICLR 2021, App. D.4, compare with the class token;
  here the class token is one of the averaged tokens), feature maps globally average-pooled
  (Lin et al., "Network in Network", 2014; the ResNet head, He et al., CVPR 2016). Swin is read
  from its token ``hidden_states``: their token mean equals the spatial mean of its
  ``reshaped_hidden_states``.
* **Text models** (BERT-like): tokenised in length-sorted batches with dynamic padding and
  mean-pooled over the attention mask (Reimers & Gurevych, EMNLP 2019, the mean pooling of
  Sentence-BERT).
* **Two-tower models** (CLIP, SigLIP): ``hf:<folder>`` is the vision tower, ``hf:<folder>:text``
  the text tower (``:vision`` says so explicitly); a folder saved from a single tower
  (``CLIPVisionModel``, ``CLIPTextModel``, ``SiglipVisionModel``, ...) loads as that tower.
  Besides its hidden states a tower has the layer ``pooled``, its own pooled output (the
  default): CLIP's layer-normed class token (vision) or end-of-text token (text) (Radford et
  al., ICML 2021), SigLIP's attention-pooling head (vision) or last-token head (text) (Zhai et
  al., ICCV 2023). SigLIP's text tower reads sequences padded to ``max_length``, as it was
  trained (the transformers SigLIP documentation).
* **sentence-transformers folders** (``modules.json``): the Transformer module's model, its
  ``sentence_bert_config.json`` (``max_seq_length``, ``do_lower_case``), the Pooling module's
  mode(s) (``cls``, ``max``, ``mean``, ``mean_sqrt_len_tokens``, ``weightedmean``,
  ``lasttoken``, concatenated in the listed order; ``include_prompt``), then Dense and Normalize
  modules, and the default prompt of ``config_sentence_transformers.json``. Hidden layers are
  pooled with the model's pooling mode; the layer ``embedding`` (the default) is exactly what
  ``SentenceTransformer.encode`` returns: the pooled last layer through the Dense and Normalize
  modules (sentence-transformers 6.2, ``Pooling._forward_padded``).
* **Classifiers** (``config.architectures`` names a ``*ForImageClassification`` or
  ``*ForSequenceClassification`` class): that class is loaded from ``transformers``; the hidden
  states stay layers and the layer ``logits`` (the classifier's logits, shape (N, num_labels))
  is the source head that LEEP (Nguyen et al., ICML 2020) and NCE read
  (:meth:`HFBackend.head_layer`).

A local path loads offline; a hub id loads when it is in the local cache, or where the hub is
reachable. Remote code is never trusted unless ``trust_remote_code=True`` is passed explicitly
to :class:`HFBackend`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferscope.backends.base import (
    FinetunableBackend,
    collect_features,
    register_backend,
    weights_digest,
)
from transferscope.backends.torch_module import forward_error, resolve_device
from transferscope.errors import InputError, first_line, require

#: the suffixes of ``hf:<folder>:<tower>``
TOWERS = ("text", "vision")
#: classifier classes whose logits become the ``logits`` layer
HEAD_SUFFIXES = ("ForImageClassification", "ForSequenceClassification")
#: sentence-transformers module types this backend reproduces
SENTENCE_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
#: sentence-transformers pooling modes, in the order the legacy config keys concatenate them
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                   "pooling_mode_mean_tokens": "mean",
                   "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean",
                   "pooling_mode_lasttoken": "lasttoken"}
#: the submodule that holds a sentence-transformers folder's Dense and Normalize modules
SENTENCE_ATTR = "sentence_modules"
#: the extra layers: a tower's pooled output, a sentence embedding, a classifier's logits
EXTRA_LAYERS = ("pooled", "embedding", "logits")
DEFAULT_MAX_LENGTH = 256


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


def split_tower(arg: str) -> tuple[str, str | None]:
    """``(source, tower)`` of the argument of ``hf:<source>[:text|:vision]``.

    Parameters
    ----------
    arg : str
        What follows ``hf:`` (with any ``@size`` put back).

    Returns
    -------
    tuple of (str, str or None)
        The folder or hub id, and ``"text"``, ``"vision"`` or ``None`` (no suffix; a folder
        whose own name ends in ``:text`` keeps it).
    """
    for tower in TOWERS:
        suffix = f":{tower}"
        if arg.endswith(suffix) and len(arg) > len(suffix) and not Path(arg).expanduser().exists():
            return arg[: -len(suffix)], tower
    return arg, None


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
    if (path / "modules.json").is_file():  # sentence-transformers: its modules say where
        return True
    config = path / "config.json"
    if not config.is_file():
        raise InputError(f"Expected a Hugging Face model folder with config.json, got "
                         f"{source!r} without one; pass the folder that save_pretrained wrote")
    cfg = _parse_json(config)
    if not isinstance(cfg, dict):
        raise InputError(f"Expected a JSON object in {config}, got a JSON "
                         f"{type(cfg).__name__}; re-save the model with save_pretrained")
    return True


def _parse_json(path: Path):
    """The JSON content of ``path`` (one-line error when it does not parse)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Expected JSON in {path}, got a file that does not parse "
                         f"({first_line(exc)}); re-save the model with save_pretrained") from None


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
    if _hub_file(source, "modules.json", True) is not None:  # sentence-transformers layout
        return True
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


def _hub_file(source: str, filename: str, local_only: bool) -> Path | None:
    """The local path of ``filename`` in hub repo ``source`` (downloaded unless
    ``local_only``), or ``None`` when it is not there."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(source, filename, local_files_only=local_only))
    except Exception:  # noqa: BLE001 - missing file, not cached, not a repo id
        return None


def _model_file(source: str, filename: str, local_only: bool) -> Path | None:
    """``filename`` (a path inside the model) of a local folder or hub id, or ``None``."""
    path = Path(source).expanduser()
    if path.is_dir():
        found = path / filename
        return found if found.is_file() else None
    return _hub_file(source, filename, local_only)


def _join(*parts: str) -> str:
    """A path inside a model folder from its non-empty parts (``"" + "x"`` is ``"x"``)."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class _Skip(nn.Module):
    """Identity for a module removed by a cut: returns its first input, whatever else it is
    called with (a pooler or head after the cut may be called with extra arguments)."""

    def forward(self, x, *args, **kwargs):
        """``x`` unchanged."""
        return x


class _Dense(nn.Module):
    """sentence-transformers' ``Dense`` module: ``activation(linear(x))``."""

    def __init__(self, in_features: int, out_features: int, bias: bool, activation: nn.Module):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = activation

    def forward(self, x):
        """``activation(linear(x))`` of (B, in_features) sentence embeddings."""
        return self.activation(self.linear(x))


class _Normalize(nn.Module):
    """sentence-transformers' ``Normalize`` module: unit L2 norm per row."""

    def forward(self, x):
        """``x / ||x||_2`` per row (``torch.nn.functional.normalize``, as sentence-transformers)."""
        return nn.functional.normalize(x, p=2, dim=-1)


@dataclass(frozen=True)
class SentenceConfig:
    """What a sentence-transformers folder declares around its transformer.

    Attributes
    ----------
    subfolder : str
        Where the Transformer module's model lives in the folder (``""``: the folder itself).
    modes : tuple of str
        Pooling modes, concatenated in this order.
    include_prompt : bool
        Whether prompt tokens are pooled.
    max_seq_length : int or None
        Token limit (``sentence_bert_config.json``).
    do_lower_case : bool
        Lower-case the text before tokenising.
    prompt : str
        The default prompt prepended to every text (``""``: none).
    post : tuple of (str, str)
        ``("dense", path)`` and ``("normalize", "")`` after the pooling, in order.
    """

    subfolder: str
    modes: tuple
    include_prompt: bool
    max_seq_length: int | None
    do_lower_case: bool
    prompt: str
    post: tuple

    def tag(self) -> str:
        """What of this configuration shapes the features (part of the model's identity)."""
        post = "+".join(kind for kind, _ in self.post) or "none"
        parts = [f"st={'+'.join(self.modes)}", f"post={post}"]
        if self.prompt:
            digest = hashlib.sha256(self.prompt.encode()).hexdigest()[:8]
            parts.append(f"prompt={digest}{'' if self.include_prompt else '-excluded'}")
        if self.do_lower_case:
            parts.append("lower")
        return "|".join(parts)


def _pooling_modes(cfg: dict, where: Path) -> tuple[str, ...]:
    """Pooling modes of a Pooling module's config: ``pooling_mode`` (a name or a list), or
    the legacy ``pooling_mode_*`` booleans (mean when none is set), as sentence-transformers
    6.2 reads them."""
    if "pooling_mode" in cfg:
        mode = cfg["pooling_mode"]
        modes = ((mode,) if isinstance(mode, str) else tuple(mode)
                 if isinstance(mode, (list, tuple)) else (repr(mode),))
    else:
        modes = tuple(m for key, m in _LEGACY_POOLING.items() if cfg.get(key, False)) or ("mean",)
    bad = [m for m in modes if m not in POOLING_MODES]
    if bad or not modes:
        raise InputError(f"Expected pooling modes among {', '.join(POOLING_MODES)} in {where}, "
                         f"got {bad or list(modes)}; fix the Pooling module's config.json")
    return modes


def read_sentence_config(source: str, local_only: bool = True) -> SentenceConfig | None:
    """The sentence-transformers configuration of a folder or hub id, or ``None`` without a
    ``modules.json``.

    Parameters
    ----------
    source : str
        Local folder or hub id.
    local_only : bool
        Read a hub id from the local cache only.

    Returns
    -------
    SentenceConfig or None

    Raises
    ------
    InputError
        For a module type other than Transformer, Pooling, Dense and Normalize (named in the
        message), modules in another order, or a config file that does not parse.
    """
    listing = _model_file(source, "modules.json", local_only)
    if listing is None:
        return None
    modules = _parse_json(listing)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise InputError(f"Expected a JSON list of modules in {listing}, got "
                         f"{type(modules).__name__}; re-save the model with sentence-transformers")
    kinds = []
    for m in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind = str(m.get("type", "")).rsplit(".", 1)[-1]
        if kind not in SENTENCE_MODULES:
            raise InputError(
                f"Expected sentence-transformers modules {', '.join(SENTENCE_MODULES)} in "
                f"{listing}, got the module type {m.get('type')!r}; rank its transformer "
                "folder on its own (without modules.json) instead"
            )
        kinds.append((kind, str(m.get("path", "") or "")))
    names = [k for k, _ in kinds]
    if names[:2] != ["Transformer", "Pooling"] or names.count("Transformer") > 1 or \
            names.count("Pooling") > 1:
        raise InputError(f"Expected the modules Transformer, Pooling, then Dense/Normalize in "
                         f"{listing}, got {' -> '.join(names)}; re-save the model with "
                         "sentence-transformers")
    sub = kinds[0][1]
    bert = _model_file(source, _join(sub, "sentence_bert_config.json"), local_only)
    bert_cfg = _parse_json(bert) if bert is not None else {}
    pool_path = _model_file(source, _join(kinds[1][1], "config.json"), local_only)
    pool_cfg = _parse_json(pool_path) if pool_path is not None else {}
    if not isinstance(pool_cfg, dict) or not isinstance(bert_cfg, dict):
        raise InputError(f"Expected JSON objects in the Pooling and Transformer configs of "
                         f"{source!r}, got another JSON value; re-save the model")
    st = _model_file(source, "config_sentence_transformers.json", local_only)
    st_cfg = _parse_json(st) if st is not None else {}
    prompt = ""
    if isinstance(st_cfg, dict) and st_cfg.get("default_prompt_name"):
        prompt = str((st_cfg.get("prompts") or {}).get(st_cfg["default_prompt_name"]) or "")
    max_len = bert_cfg.get("max_seq_length")
    return SentenceConfig(
        subfolder=sub,
        modes=_pooling_modes(pool_cfg, pool_path or listing),
        include_prompt=bool(pool_cfg.get("include_prompt", True)),
        max_seq_length=int(max_len) if max_len else None,
        do_lower_case=bool(bert_cfg.get("do_lower_case", False)),
        prompt=prompt,
        post=tuple(("dense" if k == "Dense" else "normalize", p) for k, p in kinds[2:]),
    )


def _activation(name: str | None, where: str) -> nn.Module:
    """The ``torch.nn`` activation a Dense config names (sentence-transformers' default
    ``Tanh`` when none is named); other code is never imported."""
    if name is None:
        return nn.Tanh()
    import importlib

    module_name, _, cls_name = str(name).rpartition(".")
    cls = None
    if module_name == "torch.nn" or module_name.startswith("torch.nn."):
        try:
            cls = getattr(importlib.import_module(module_name), cls_name, None)
        except ImportError:
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise InputError(f"Expected a torch.nn activation class in {where}, got {name!r}; "
                         "only torch.nn activations load (no code from the folder runs)")
    return cls()


def _dense_module(source: str, path: str, local_only: bool) -> _Dense:
    """A Dense module of a sentence-transformers folder, its weights read safely
    (safetensors, or ``torch.load(weights_only=True)``)."""
    from transferscope.backends.simple import load_checkpoint

    where = _join(path, "config.json")
    cfg_path = _model_file(source, where, local_only)
    if cfg_path is None:
        raise InputError(f"Expected {where} in {source!r} for its Dense module, got none; "
                         "re-save the model with sentence-transformers")
    cfg = _parse_json(cfg_path)
    weights = (_model_file(source, _join(path, "model.safetensors"), local_only)
               or _model_file(source, _join(path, "pytorch_model.bin"), local_only))
    if not isinstance(cfg, dict) or weights is None or not {"in_features", "out_features"} <= set(
            cfg):
        raise InputError(f"Expected a Dense module config (in_features, out_features) and its "
                         f"weights (model.safetensors or pytorch_model.bin) in {path!r} of "
                         f"{source!r}, got neither or not both; re-save the model")
    dense = _Dense(int(cfg["in_features"]), int(cfg["out_features"]), bool(cfg.get("bias", True)),
                   _activation(cfg.get("activation_function"), str(cfg_path)))
    state = load_checkpoint(weights)
    state = {k: v for k, v in state.items() if k.startswith("linear.")}
    try:
        dense.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"Expected Dense weights that fit {cfg_path.name} in {path!r}, got "
                         f"{first_line(exc)}; re-save the model with sentence-transformers") \
            from None
    return dense.eval()


def exclude_prompt(mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """The attention mask without the prompt's tokens (sentence-transformers 6.2,
    ``Pooling._exclude_prompt_from_mask``; left padding respected).

    Parameters
    ----------
    mask : torch.Tensor of shape (B, T)
        Attention mask.
    prompt_length : int
        Tokens of the prompt (its leading special token included).

    Returns
    -------
    torch.Tensor of shape (B, T)
    """
    mask = mask.clone()
    pad = mask.to(torch.int32).argmax(dim=1)
    positions = torch.arange(mask.size(1), device=mask.device).unsqueeze(0)
    mask[positions < (pad + prompt_length).unsqueeze(1)] = 0
    return mask


def pool_sentence(h: torch.Tensor, mask: torch.Tensor, modes=("mean",),
                  full_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Token states pooled as sentence-transformers' Pooling module does (version 6.2,
    ``Pooling._forward_padded``; Reimers & Gurevych, EMNLP 2019), modes concatenated in order.

    Parameters
    ----------
    h : torch.Tensor of shape (B, T, C)
        Token states.
    mask : torch.Tensor of shape (B, T)
        Attention mask (1 for tokens, 0 for padding), without the prompt's tokens where the
        prompt is not pooled (:func:`exclude_prompt`).
    modes : tuple of str
        Among :data:`POOLING_MODES`: ``cls`` the first non-padding token, ``max`` the
        element-wise maximum over tokens, ``mean`` the masked mean, ``mean_sqrt_len_tokens`` the
        masked sum over the square root of the length, ``weightedmean`` positions 1..T as
        weights, ``lasttoken`` the last non-padding token.
    full_mask : torch.Tensor of shape (B, T), optional
        The attention mask with the prompt: ``weightedmean`` counts positions from its first
        token (default ``mask``), so an excluded prompt keeps the text's position weights.

    Returns
    -------
    torch.Tensor of shape (B, C * len(modes))
    """
    out = []
    m = mask.unsqueeze(-1).to(h.dtype)
    for mode in modes:
        if mode == "cls":
            first = mask.to(torch.int).argmax(dim=1)
            out.append(h[torch.arange(len(h), device=h.device), first])
        elif mode == "max":
            out.append(h.masked_fill(m == 0, float("-inf")).max(dim=1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            total = (h * m).sum(dim=1)
            n = torch.clamp(m.sum(dim=1), min=1e-9)
            out.append(total / (n if mode == "mean" else torch.sqrt(n)))
        elif mode == "weightedmean":
            weights = torch.arange(1, h.shape[1] + 1, device=h.device, dtype=h.dtype).view(1, -1, 1)
            start = (mask if full_mask is None else full_mask).to(torch.int32).argmax(dim=1)
            weights = weights - start.view(-1, 1, 1).to(h.dtype)
            wm = m * weights
            out.append((h * wm).sum(dim=1) / torch.clamp(wm.sum(dim=1), min=1e-9))
        elif mode == "lasttoken":
            seq = h.shape[1]
            values, idx = mask.flip(1).max(1)
            idx = torch.where(values == 0, seq - 1, idx)
            out.append((h * m)[torch.arange(len(h), device=h.device), seq - idx - 1])
        else:
            raise InputError(f"Expected pooling modes among {', '.join(POOLING_MODES)}, got "
                             f"{mode!r}")
    return torch.cat(out, dim=-1)


def pool_hidden(h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One vector per sample of a hidden state: feature maps globally average-pooled, token
    states averaged (over the attention mask when given).

    Parameters
    ----------
    h : torch.Tensor of shape (B, C, H, W) or (B, T, C)
        Feature maps (ConvNeXt, ResNet) or token states.
    mask : torch.Tensor of shape (B, T), optional
        Attention mask of text (padding left out of the mean).

    Returns
    -------
    torch.Tensor of shape (B, C)
    """
    if h.dim() == 4:  # (B, C, H, W) feature maps: global average pooling (Lin et al., 2014)
        return h.mean(dim=(2, 3))
    if h.dim() == 2:  # already one vector per sample
        return h
    if mask is not None:  # masked mean (Sentence-BERT's mean pooling)
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)
    return h.mean(dim=1)  # (B, T, C) tokens


def used_columns(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded text batch cut to the token columns any sample uses (left or right padding).

    Parameters
    ----------
    ids, mask : torch.Tensor of shape (B, L)
        Token ids and attention mask.

    Returns
    -------
    tuple of torch.Tensor of shape (B, L')
        Both, without the columns that are padding in every sample (at least one column kept).
    """
    keep = mask.bool().any(dim=0)
    keep[0] |= not bool(keep.any())
    return ids[:, keep], mask[:, keep]


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


def _stack_length(config) -> int | None:
    """How many blocks or stages the config declares (``num_hidden_layers``, ``num_stages``,
    ``depths``), or ``None``."""
    for key in ("num_hidden_layers", "num_stages"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    depths = getattr(config, "depths", None)
    return len(depths) if depths else None


def find_stack(module, config) -> tuple[str, int]:
    """``(dotted name, length)`` of the model's stack of blocks or stages: the shallowest
    ``nn.ModuleList`` as long as the config declares (any, shallowest first, without one).

    Parameters
    ----------
    module : torch.nn.Module
        A transformers model.
    config : transformers.PretrainedConfig
        Its configuration.

    Returns
    -------
    tuple of (str, int)

    Raises
    ------
    InputError
        When there is no such list.
    """
    want = _stack_length(config)
    lists = [(name.count("."), i, name, len(m))
             for i, (name, m) in enumerate(module.named_modules())
             if name and isinstance(m, nn.ModuleList) and len(m)
             and (want is None or len(m) == want)]
    if not lists:
        raise InputError(
            f"Expected a stack of hidden layers in a {getattr(config, 'model_type', '?')} model "
            f"({want or 'num_hidden_layers or depths in its config'} blocks in an nn.ModuleList),"
            " got none; pass a model of a supported family (a text or image encoder, or one "
            "tower of a two-tower model)"
        )
    _, _, name, length = min(lists)
    return name, length


class HFBackend(FinetunableBackend):
    """A Hugging Face model folder (or cached hub id) with its tokenizer or image processor.

    Parameters
    ----------
    source : str
        Local folder or hub id.
    tower : {"text", "vision"}, optional
        The tower of a two-tower model (CLIP, SigLIP; default ``"vision"``).
    max_length : int, optional
        Token limit for text (default: a sentence-transformers folder's ``max_seq_length``,
        else 256; never more than the tokenizer and the position embeddings take).
    trust_remote_code : bool
        Run code shipped with the model (never by default).
    module : torch.nn.Module, optional
        An already loaded model.
    name : str, optional
        The model name (default ``hf:<source>``, with ``:<tower>`` when one was asked for).

    Attributes
    ----------
    n_layers : int
        Blocks or stages in the stack (layers ``hidden.0`` ... ``hidden.<n_layers>``).
    tower : str or None
        ``"text"`` or ``"vision"`` for one tower of a two-tower model (or a saved tower).
    sentence : SentenceConfig or None
        A sentence-transformers folder's configuration.
    head : str or None
        The classifier class whose ``logits`` are a layer.
    """

    #: the model's own processor or tokenizer prepares inputs (no --input-size/--mean/--std)
    accepts_preprocessing = False

    def __init__(self, source: str, *, tower: str | None = None, max_length: int | None = None,
                 trust_remote_code: bool = False, module=None, name=None):
        transformers = require("transformers", "hf", "Hugging Face models")
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        _quiet_hub()
        if tower not in (None, *TOWERS):
            raise InputError(f"Expected the tower text or vision, got {tower!r}; write "
                             "hf:<folder>:text or hf:<folder>:vision")
        if max_length is not None and int(max_length) < 1:
            raise InputError(f"Expected max_length >= 1 tokens, got {max_length}")
        local = module is None and _check_source(source)
        kw = {"local_files_only": True, "trust_remote_code": trust_remote_code}
        if module is None and not local:
            kw["local_files_only"] = _hub_cached(transformers, source, trust_remote_code)
        self.sentence = read_sentence_config(source, kw["local_files_only"])
        sub = {"subfolder": self.sentence.subfolder} if self.sentence and \
            self.sentence.subfolder else {}
        self.tower, self.head = None, None
        try:
            if module is None:
                config = transformers.AutoConfig.from_pretrained(source, **sub, **kw)
                cls = self._model_class(transformers, config, tower)
                module = cls.from_pretrained(source, **sub, **kw)
            self.module = module.eval()
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - transformers raises many types for bad folders
            raise InputError(
                f"Expected a Hugging Face model that transformers {transformers.__version__} "
                f"loads from {source!r}, got {type(exc).__name__}: {first_line(exc)}; check "
                "config.json (model_type) and that the weights beside it were written by "
                "save_pretrained"
            ) from None
        cfg = self.module.config
        kind = getattr(self.module, "main_input_name", "input_ids")
        if kind not in ("input_ids", "pixel_values"):
            raise InputError(f"Expected a text or image model in {source!r}, got a "
                             f"{cfg.model_type} model that takes {kind}; pass a text or image "
                             "encoder (or one tower of it)")
        modality = "text" if kind == "input_ids" else "image"
        own = "text" if modality == "text" else "vision"
        if tower is not None and tower != own:
            raise InputError(f"Expected a two-tower model (CLIP, SigLIP) for ':{tower}', got a "
                             f"{cfg.model_type} model of {modality} inputs in {source!r}; drop "
                             f"':{tower}'")
        if self.tower is None and cfg.model_type.endswith(("_vision_model", "_text_model")):
            self.tower = own  # a tower saved on its own
        self._load_preparation(transformers, source, modality, {**sub, **kw})
        self.modalities = (modality,)
        self.source = source
        self.name = name or f"hf:{source}" + (f":{tower}" if tower else "")
        try:
            self._stack_name, self.n_layers = find_stack(self.module, cfg)
        except InputError:  # features still work (hidden states); freezing and cutting do not
            if not _stack_length(cfg):
                raise
            self._stack_name, self.n_layers = None, _stack_length(cfg)
        if self.sentence is not None and not hasattr(self.module, SENTENCE_ATTR):
            post = [_dense_module(source, p, kw["local_files_only"]) if k == "dense"
                    else _Normalize() for k, p in self.sentence.post]
            self.module.add_module(SENTENCE_ATTR, nn.Sequential(*post))
        self._configure_text(max_length)
        if self.sentence is not None:
            self._extra = ("embedding",)
        elif self.tower is not None and getattr(cfg, "vision_use_head", True) is not False:
            self._extra = ("pooled",)
        elif self.head is not None:
            self._extra = ("logits",)
        else:
            self._extra = ()
        self._digest = None

    # -- loading --
    def _model_class(self, transformers, config, tower):
        """The transformers class to load: AutoModel for sentence-transformers folders and plain
        encoders, the named classifier class, or a two-tower model's tower class."""
        if self.sentence is not None:
            if tower == "vision":
                raise InputError("Expected ':text' (or no tower) for a sentence-transformers "
                                 "folder, got ':vision'; it embeds text only")
            if hasattr(config, "text_config") and hasattr(config, "vision_config"):
                raise InputError(
                    f"Expected a text encoder in a sentence-transformers folder, got a two-tower "
                    f"{config.model_type} model; save its model without modules.json and pass "
                    "hf:<that folder>:text for its text tower"
                )
            return transformers.AutoModel
        archs = [a for a in (getattr(config, "architectures", None) or []) if isinstance(a, str)]
        head = next((a for a in archs if a.endswith(HEAD_SUFFIXES)), None)
        if head is not None:
            self.head = head
            auto = ("AutoModelForImageClassification" if head.endswith(HEAD_SUFFIXES[0])
                    else "AutoModelForSequenceClassification")
            return getattr(transformers, head, None) or getattr(transformers, auto)
        if hasattr(config, "text_config") and hasattr(config, "vision_config"):
            self.tower = tower or "vision"
            sub = getattr(config, f"{self.tower}_config")
            name = type(sub).__name__.replace("Config", "Model")
            cls = getattr(transformers, name, None)
            if cls is None:
                try:
                    cls = transformers.AutoModel._model_mapping[type(sub)]
                except KeyError:
                    raise InputError(
                        f"Expected a two-tower model whose {self.tower} tower transformers loads "
                        f"on its own ({name}), got a {config.model_type} model without one; "
                        f"save the {self.tower} tower with save_pretrained and pass that folder"
                    ) from None
            return cls
        return transformers.AutoModel

    def _load_preparation(self, transformers, source, modality, kw):
        """The tokenizer (text) or image processor (images) saved with the model."""
        self.tokenizer = self.processor = None
        try:
            if modality == "text":
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kw)
            else:
                kw = {k: v for k, v in kw.items() if k != "subfolder"}
                self.processor = transformers.AutoImageProcessor.from_pretrained(source, **kw)
        except Exception as exc:  # noqa: BLE001 - missing or broken files
            what = "a tokenizer" if modality == "text" else "an image processor"
            raise InputError(
                f"Expected a tokenizer or an image processor with {source!r} (its {modality} "
                f"model needs {what}), got {type(exc).__name__}: {first_line(exc, 100)}; save "
                "one beside the model (save_pretrained)"
            ) from None

    def _configure_text(self, max_length):
        """Token limit, padding, prompt and lower-casing of a text model."""
        self.max_length, self.fixed_length, self.pass_mask = None, False, True
        self.prompt_length = 0
        if self.tokenizer is None:
            return
        if self.tokenizer.pad_token is None and self.tokenizer.eos_token is not None:
            self.tokenizer.pad_token = self.tokenizer.eos_token  # GPT-style: pad with EOS
        limits = [int(v) for v in (getattr(self.tokenizer, "model_max_length", None),
                                   getattr(self.module.config, "max_position_embeddings", None))
                  if isinstance(v, int) and 0 < v < 1_000_000]
        if max_length is not None:
            self.max_length = int(max_length)
        elif self.sentence is not None and self.sentence.max_seq_length:
            self.max_length = self.sentence.max_seq_length
        else:
            caps = ([DEFAULT_MAX_LENGTH] if self.sentence is None else []) + limits
            self.max_length = min(caps, default=DEFAULT_MAX_LENGTH)
        # SigLIP's text tower was trained on sequences padded to max_length (its last position
        # is pooled), and its tokenizer gives no attention mask
        self.fixed_length = self.module.config.model_type.startswith("siglip")
        self.pass_mask = "attention_mask" in getattr(self.tokenizer, "model_input_names",
                                                     ["attention_mask"])
        if self.sentence is not None and self.sentence.prompt:
            ids = self.tokenizer([self._text("")], truncation=True,
                                 max_length=self.max_length)["input_ids"][0]
            special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
            self.prompt_length = len(ids) - (1 if ids and ids[-1] in special else 0)

    # -- the Backend contract --
    def layers(self):
        """The hidden states ``hidden.0`` (embeddings) ... ``hidden.L`` (last block or stage),
        then ``pooled`` (a tower), ``embedding`` (a sentence-transformers folder) or ``logits``
        (a classifier)."""
        return [f"hidden.{i}" for i in range(self.n_layers + 1)] + list(self._extra)

    def default_layer(self):
        """``embedding`` for a sentence-transformers folder, ``pooled`` for a tower, else
        ``hidden.L`` (the last hidden state; a classifier's too: its logits are no feature)."""
        if self._extra and self._extra[0] in ("embedding", "pooled"):
            return self._extra[0]
        return f"hidden.{self.n_layers}"

    def head_layer(self):
        """``"logits"`` for a classifier of 2 or more labels, else ``None``."""
        if "logits" in self._extra and int(getattr(self.module.config, "num_labels", 0)) >= 2:
            return "logits"
        return None

    def identity(self):
        """Name, weights digest (a sentence-transformers folder's Dense weights included),
        structure digest (``repr`` of the module), tokenizer (vocabulary size, max length,
        padding) or image-processor digest, and what pools the features: the tower, the
        sentence-transformers pooling, prompt and Dense/Normalize modules, or the head."""
        if self._digest is None:  # hashed once (a twin resets it: new weights)
            self._digest = (weights_digest(self.module.state_dict()),
                            hashlib.sha256(repr(self.module).encode()).hexdigest()[:12])
        weights, structure = self._digest
        if self.tokenizer is not None:
            pre = f"tok={len(self.tokenizer.get_vocab())}|max_len={self.max_length}"
            if self.fixed_length:
                pre += "|pad=max_length"
        else:
            pre = "proc=" + hashlib.sha256(self.processor.to_json_string().encode()).hexdigest()[:8]
        parts = [self.name, f"w={weights}", f"s={structure}", pre]
        if self.sentence is not None:
            parts.append(self.sentence.tag())
        else:
            parts.append("mean-pool")
        if self.tower is not None:
            parts.append(f"tower={self.tower}")
        if self.head is not None:
            parts.append(f"head={self.head}")
        return "|".join(parts)

    def features(self, data, layers, *, batch_size=64, device=None, progress=None,
                 num_workers: int = 0, precision: str = "fp32"):
        """Pooled features (see :meth:`Backend.features` and the module docstring).

        Text is tokenised in length-sorted batches with dynamic padding (SigLIP: padded to
        ``max_length``); images go through the model's processor. Hidden states are pooled
        (token mean, sentence-transformers pooling, or global average pooling of feature maps);
        ``pooled``, ``embedding`` and ``logits`` are the model's own outputs. Rows come back in
        the dataset's order.

        Returns
        -------
        dict of str to ndarray of shape (N, D_layer)
            float32 features of the N samples for each requested layer.
        """
        chunks = self.iter_features(data, layers, batch_size=batch_size, device=device,
                                    num_workers=num_workers, precision=precision)
        return collect_features(chunks, len(data), progress)

    def iter_features(self, data, layers, *, batch_size=64, device=None, num_workers=0,
                      precision="fp32"):
        """Pooled features batch by batch (see :meth:`features` and
        :meth:`Backend.iter_features`); each batch's rows are an index array (text batches are
        length-sorted). Inputs are read one item at a time in this process (``num_workers`` is
        accepted for the common interface); the forward pass runs under
        :func:`transferscope.precision.autocast`.

        Yields
        ------
        tuple of (ndarray of int, dict of str to ndarray of shape (B, D_layer))
        """
        from transferscope.precision import autocast, resolve_precision

        self.check_input(data)
        self.check_layers(layers)
        device = resolve_device(device)
        precision = resolve_precision(precision, device)
        module = self.module.to(device)
        n = len(data)
        if self.tokenizer is not None:  # similar lengths together: less padding
            order = np.argsort([len(str(t)) for t in data.inputs], kind="stable")
        else:
            order = np.arange(n)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            with torch.inference_mode():
                try:
                    x, mask = self._encode([data.inputs[i] for i in rows], device)
                    with autocast(precision, device):
                        values = self._layer_values(module, x, mask, layers)
                except InputError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the model's forward pass failed
                    shape = (len(rows), *np.shape(data.inputs[rows[0]]))
                    raise forward_error(self.name, np.empty(shape), exc, data.kind) from None
                out = {layer: values[layer].float().reshape(len(rows), -1).cpu().numpy()
                       for layer in layers}
            yield rows, out

    # -- shared by features and feature_fn --
    def _text(self, item) -> str:
        """A text as the model reads it: lower-cased (``do_lower_case``) and behind the
        default prompt of a sentence-transformers folder."""
        text = str(item)
        if self.sentence is not None:
            text = self.sentence.prompt + text
            if self.sentence.do_lower_case:
                text = text.lower()
        return text

    def _tokenize(self, items, padding):
        enc = self.tokenizer([self._text(t) for t in items], padding=padding, truncation=True,
                             max_length=self.max_length, return_attention_mask=True,
                             return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def _encode(self, items, device):
        """``(input, mask)`` of a batch: token ids and attention mask, or pixel values and
        ``None``."""
        if self.tokenizer is not None:
            ids, mask = self._tokenize(items, "max_length" if self.fixed_length else True)
            return ids.to(device), mask.to(device)
        return self.prepare(items, None).to(device), None

    def _layer_values(self, module, x, mask, layers) -> dict[str, torch.Tensor]:
        """One forward pass of ``module``; each layer's (B, D) value."""
        hidden = any(layer not in EXTRA_LAYERS for layer in layers)
        if mask is None:
            out = module(pixel_values=x, output_hidden_states=hidden)
        elif self.pass_mask:
            out = module(input_ids=x, attention_mask=mask, output_hidden_states=hidden)
        else:
            out = module(input_ids=x, output_hidden_states=hidden)
        full = mask
        if mask is not None and self.prompt_length and not self.sentence.include_prompt:
            mask = exclude_prompt(mask, self.prompt_length)
        return {layer: self._select(module, out, layer, mask, full) for layer in layers}

    def _pool(self, h, mask, full=None):
        if mask is not None and self.sentence is not None and h.dim() == 3:
            return pool_sentence(h, mask, self.sentence.modes, full)
        return pool_hidden(h, mask)

    def _select(self, module, out, layer, mask, full=None) -> torch.Tensor:
        """The (B, D) value of ``layer`` from the model's output ``out``."""
        if layer == "logits":
            return out.logits
        if layer == "pooled":
            return out.pooler_output.flatten(1)
        if layer == "embedding":
            pooled = pool_sentence(out.last_hidden_state, mask, self.sentence.modes, full)
            return module.get_submodule(SENTENCE_ATTR)(pooled)
        i = int(layer.split(".")[1])
        states = out.hidden_states or ()
        if len(states) > i:
            return self._pool(states[i], mask, full)
        if self._stack_name and len(module.get_submodule(self._stack_name)) == i:  # cut there
            return self._pool(out.last_hidden_state, mask, full)
        raise InputError(f"Expected {self.n_layers + 1} hidden states from model {self.name!r}, "
                         f"got {len(states)}; pick one of its layers up to hidden."
                         f"{max(0, len(states) - 1)}")

    # -- fine-tuning interface (see FinetunableBackend) --
    def prepare(self, batch, data) -> torch.Tensor:
        """Text: (B, 2, max_length) int64 token ids and attention mask (trimmed to the tokens
        of each batch in ``feature_fn``, except for SigLIP); images: the processor's pixel
        values (B, 3, H, W)."""
        if self.tokenizer is not None:
            ids, mask = self._tokenize(batch, "max_length")
            return torch.stack([ids, mask], dim=1)
        from PIL import Image

        images = [Image.fromarray(_uint8_image(a)).convert("RGB") for a in batch]
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def feature_fn(self, module, layer, *, cut: bool = False):
        """``x -> (B, D)``: differentiable value of ``layer`` of ``module`` (see
        :meth:`FinetunableBackend.feature_fn`), pooled as :meth:`features` pools it.

        ``x`` is what :meth:`prepare` returns: for text, (B, 2, max_length) token ids and
        attention mask, trimmed to the columns any sample uses; for images, pixel values.
        ``cut`` is accepted for the common interface: a truncated module (:meth:`truncate`)
        already ends at the layer.
        """

        def run(x):
            if self.tokenizer is None:
                return self._layer_values(module, x, None, [layer])[layer]
            ids, mask = x[:, 0], x[:, 1]
            if not self.fixed_length:
                ids, mask = used_columns(ids, mask)
            return self._layer_values(module, ids, mask, [layer])[layer]

        return run

    def _path(self, module):
        """``[(owner, child name)]`` from ``module`` down to the stack (the last pair)."""
        if self._stack_name is None:
            raise InputError(f"Expected a stack of {self.n_layers} layers in {self.name!r}, got "
                             "none; freezing or cutting by layer needs it (use full or "
                             "linear_probe)")
        owner, path = module, []
        for part in self._stack_name.split("."):
            path.append((owner, part))
            owner = getattr(owner, part)
        return path

    def truncate(self, module, layer):
        """Keep the first ``i`` blocks for a cut at ``hidden.i`` (in place); modules after the
        stack at every level above it (final norms, poolers, heads, Dense modules) are skipped:
        they do not shape hidden states. ``pooled``, ``embedding`` and ``logits`` are the
        model's outputs: nothing is cut for them."""
        if layer in EXTRA_LAYERS:
            return module
        i = int(layer.split(".")[1])
        path = self._path(module)
        owner, attr = path[-1]
        setattr(owner, attr, nn.ModuleList(list(getattr(owner, attr))[:i]))
        if hasattr(module.config, "num_hidden_layers"):
            try:
                module.config.num_hidden_layers = i
            except (AttributeError, TypeError, ValueError):  # pragma: no cover - read-only
                pass
        for owner, part in path:
            after = False
            for name, _ in list(owner.named_children()):
                if after:
                    setattr(owner, name, _Skip())
                after = after or name == part
        return module

    def blocks(self, module, layer):
        """The modules before the stack (embeddings, stem, pre-norm) at every level above it,
        then its first ``i`` blocks for ``hidden.i``; for ``pooled``, ``embedding`` and
        ``logits`` every block, then the modules after the stack (final norm, pooler, head,
        Dense), innermost first. Blocks without parameters are left out."""
        path = self._path(module)  # checks that there is a stack
        before, after = [], []
        prefix = ""
        for owner, part in path:
            names = [n for n, _ in owner.named_children()]
            at = names.index(part)
            children = list(owner.named_children())
            before += [(prefix + n, c) for n, c in children[:at]]
            after = [(prefix + n, c) for n, c in children[at + 1:]] + after
            prefix += part + "."
        stack = module.get_submodule(self._stack_name)
        i = len(stack) if layer in EXTRA_LAYERS else int(layer.split(".")[1])
        out = before + [(f"{self._stack_name}.{j}", stack[j]) for j in range(min(i, len(stack)))]
        if layer in EXTRA_LAYERS:
            out += after
        return [(n, b) for n, b in out if next(b.parameters(), None) is not None]


@register_backend("hf")
def _hf(name):
    arg = name.arg if name.size is None else f"{name.arg}@{name.size}"
    if not arg:
        raise InputError("Expected hf:<local path or hub id>, got an empty name")
    source, tower = split_tower(arg)
    return HFBackend(source, tower=tower, name=f"hf:{arg}")
