"""Numeric precision of forward (and backward) passes: fp32, bf16 autocast, fp16 autocast.

One setting, ``precision``, for extraction and training (``--precision``; a field of
:class:`~transferscope.config.TrainConfig`, ``RankConfig`` and ``ProfileConfig``):

- ``"fp32"``: no autocast.
- ``"bf16"``: ``torch.autocast(dtype=torch.bfloat16)`` on CUDA (GPUs with bf16: Ampere and
  later) and on the CPU (torch autocasts matmuls and convolutions on any x86 or ARM CPU; fast
  only with native bf16 instructions, AVX512-BF16 or AMX).
- ``"fp16"``: ``torch.autocast(dtype=torch.float16)`` with a ``GradScaler`` when training; CUDA
  only (older GPUs without bf16).
- ``"auto"``: bf16 on a CUDA device that supports it, fp16 on any other CUDA device, fp32 on the
  CPU. The CPU gets fp32 because bf16 there pays off only with native bf16 instructions, which
  the CPUs this project runs on lack (without them torch converts every operand: slower than
  fp32, and 8 bits of mantissa for no gain); ask for ``"bf16"`` to use it anyway.

This module imports torch only inside its functions.
"""

from __future__ import annotations

from transferscope.errors import InputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_precision(precision) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line :class:`InputError`.

    Parameters
    ----------
    precision : str
        ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Returns
    -------
    str
    """
    if precision not in PRECISIONS:
        raise InputError(f"Expected precision among {', '.join(PRECISIONS)}, got "
                         f"{precision!r}; e.g. --precision bf16")
    return precision


def _device_type(device) -> str:
    import torch

    return torch.device(device).type if device is not None else "cpu"


def resolve_precision(precision: str, device) -> str:
    """The precision ``precision`` means on ``device`` (``"auto"`` decided; see the module
    docstring).

    Parameters
    ----------
    precision : str
        One of :data:`PRECISIONS`.
    device : str or torch.device
        Where the passes run (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).

    Returns
    -------
    str
        ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Raises
    ------
    InputError
        For an unknown precision, fp16 off CUDA, or bf16 on a GPU without it.
    """
    import torch

    check_precision(precision)
    kind = _device_type(device)
    if kind == "cuda":
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        if precision == "auto":
            return "bf16" if bf16 else "fp16"
        if precision == "bf16" and not bf16:
            raise InputError(f"Expected a GPU with bf16 for --precision bf16, got "
                             f"{torch.cuda.get_device_name(device)}, which has none; use "
                             "--precision fp16 (or auto)")
        return precision
    if precision == "fp16":
        raise InputError(f"Expected --precision fp16 only on a CUDA device, got device "
                         f"{str(device)!r}; use --precision bf16 or fp32 there")
    if precision == "bf16" and kind != "cpu":
        raise InputError(f"Expected --precision bf16 on a CUDA device or the CPU, got device "
                         f"{str(device)!r}; use --precision fp32 there")
    return "fp32" if precision == "auto" else precision


def autocast(precision: str, device):
    """The autocast context of a resolved precision on ``device`` (disabled for fp32).

    Parameters
    ----------
    precision : str
        ``"fp32"``, ``"bf16"`` or ``"fp16"`` (from :func:`resolve_precision`).
    device : str or torch.device

    Returns
    -------
    torch.autocast
    """
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    kind = _device_type(device)
    return torch.autocast(device_type=kind, dtype=dtype if precision != "fp32" else None,
                          enabled=precision != "fp32")


def grad_scaler(precision: str, device):
    """A ``torch.amp.GradScaler``, enabled for fp16 only (bf16 keeps fp32's exponent range).

    Parameters
    ----------
    precision : str
        A resolved precision.
    device : str or torch.device

    Returns
    -------
    torch.amp.GradScaler
    """
    import torch

    kind = _device_type(device)
    return torch.amp.GradScaler(kind if kind == "cuda" else "cpu",
                                enabled=precision == "fp16")


def cache_tag(precision: str) -> str:
    """What a resolved precision adds to a feature-cache identity: nothing for fp32 (keys of
    features extracted before precisions existed stay valid), ``"|prec=bf16"`` otherwise."""
    return "" if precision == "fp32" else f"|prec={precision}"
