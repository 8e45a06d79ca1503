"""Data augmentation of training batches, the same for both arms (transfer and scratch).

A fair comparison trains both arms with the same recipe, and the standard recipes augment:

- images (B, C, H, W): random crop with zero padding (``round(H / 8)`` pixels, 4 at 32 px) and
  a horizontal flip with probability 0.5, the CIFAR recipe of He et al., "Deep residual
  learning for image recognition", CVPR 2016 (Sec. 4.2);
- series (B, C, T): jitter (Gaussian noise of 0.03 times each series' standard deviation) and
  scaling (each series multiplied by a factor drawn from N(1, 0.1)), after Um et al., "Data
  augmentation of wearable sensor data for Parkinson's disease monitoring using convolutional
  neural networks", ICMI 2017.

Batches arrive prepared (normalised) and on the training device; the transforms are vectorised
there, with no loop over samples, so zero padding is the mean pixel of the normalisation. Draws
come from a ``torch.Generator`` seeded with the run's seed (one per device; a device without
its own generators draws on the CPU), never from the global torch state, so a rerun is identical
and augmentation does not shift any other random draw of the run. Validation and test data are
never augmented: only :func:`transferscope.finetune.trainer.train` calls an augmenter, on its
training batches.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from transferscope.config import AUGMENTS
from transferscope.errors import InputError

__all__ = ["AUGMENTS", "Augmenter", "augmenter", "crop_flip", "jitter", "resolve", "scale"]

JITTER_SIGMA = 0.03  # noise std as a fraction of each series' std
SCALE_SIGMA = 0.1  # std of the scaling factor around 1

_SHAPES = {"image": (4, "(B, C, H, W)"), "series": (3, "(B, C, T)")}


def _floating(x) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dim()}-D {str(x.dtype).removeprefix('torch.')} batch of shape " \
               f"{tuple(x.shape)}"
    return f"a {type(x).__name__}"


def resolve(mode: str, example) -> str:
    """The augmentation a prepared training batch gets: ``"image"``, ``"series"`` or ``"none"``.

    Parameters
    ----------
    mode : str
        One of :data:`AUGMENTS`; ``"auto"`` picks image for a 4-D floating batch, series for a
        3-D floating one and none for anything else (tables, token ids of text, dicts).
    example : torch.Tensor or object
        A prepared training batch (a few samples are enough).

    Returns
    -------
    str

    Raises
    ------
    InputError
        For an unknown mode, or an explicit ``"image"`` / ``"series"`` on a batch of another
        shape or dtype.
    """
    if mode not in AUGMENTS:
        raise InputError(f"Expected augment among {', '.join(AUGMENTS)}, got {mode!r}; "
                         "e.g. --augment none")
    if mode == "auto":
        if _floating(example):
            return {4: "image", 3: "series"}.get(example.dim(), "none")
        return "none"
    if mode in _SHAPES:
        dims, shape = _SHAPES[mode]
        if not (_floating(example) and example.dim() == dims):
            raise InputError(f"Expected a {dims}-D floating batch {shape} for --augment {mode}, "
                             f"got {_describe(example)}; use --augment auto or none")
    return mode


def crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the zero-padded images and random horizontal flip, per sample.

    Parameters
    ----------
    x : torch.Tensor of shape (B, C, H, W), floating
        Images.
    generator : torch.Generator
        Source of the offsets and flips (on ``x``'s device, or the CPU).

    Returns
    -------
    torch.Tensor of shape (B, C, H, W)
        Each image is the H x W window at a random offset of the image padded with
        ``max(1, round(H / 8))`` rows and ``max(1, round(W / 8))`` columns of zeros on every
        side, mirrored left-right with probability 0.5. One gather, no loop over samples.
    """
    b, _, h, w = x.shape
    ph, pw = max(1, round(h / 8)), max(1, round(w / 8))
    padded = F.pad(x, (pw, pw, ph, ph))
    dev = generator.device
    top = torch.randint(0, 2 * ph + 1, (b,), generator=generator, device=dev).to(x.device)
    left = torch.randint(0, 2 * pw + 1, (b,), generator=generator, device=dev).to(x.device)
    flip = (torch.rand(b, generator=generator, device=dev) < 0.5).to(x.device)
    i, j = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    rows = top[:, None] + i  # (B, H)
    cols = left[:, None] + torch.where(flip[:, None], w - 1 - j, j)  # (B, W)
    n = torch.arange(b, device=x.device)[:, None, None, None]
    c = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[n, c, rows[:, None, :, None], cols[:, None, None, :]]


def jitter(x: torch.Tensor, generator: torch.Generator, sigma: float = JITTER_SIGMA) \
        -> torch.Tensor:
    """Add Gaussian noise of ``sigma`` times each series' standard deviation.

    Parameters
    ----------
    x : torch.Tensor of shape (B, C, T), floating
        Series (each (sample, channel) pair is one series).
    generator : torch.Generator
        Source of the noise.
    sigma : float
        Noise std relative to the series' std (over T).

    Returns
    -------
    torch.Tensor of shape (B, C, T)
    """
    noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x)
    std = x.float().std(dim=-1, keepdim=True) if x.shape[-1] > 1 else torch.zeros_like(x[..., :1])
    return x + noise * (sigma * std).to(x)


def scale(x: torch.Tensor, generator: torch.Generator, sigma: float = SCALE_SIGMA) \
        -> torch.Tensor:
    """Multiply each series by a factor drawn from N(1, ``sigma``).

    Parameters
    ----------
    x : torch.Tensor of shape (B, C, T), floating
        Series.
    generator : torch.Generator
        Source of the factors.
    sigma : float
        Std of the factor.

    Returns
    -------
    torch.Tensor of shape (B, C, T)
    """
    factor = 1 + sigma * torch.randn(x.shape[:-1] + (1,), generator=generator,
                                     device=generator.device)
    return x * factor.to(x)


class Augmenter:
    """A seeded augmentation of training batches: ``augment(x) -> x'`` of the same shape.

    Parameters
    ----------
    mode : str
        ``"image"`` or ``"series"`` (resolved, see :func:`resolve`).
    seed : int
        Seed of the generators (one per device the batches come from).
    """

    def __init__(self, mode: str, seed: int = 0):
        if mode not in _SHAPES:
            raise InputError(f"Expected an augmenter mode among image, series, got {mode!r}; "
                             "use augmenter(mode, example) to resolve auto and none")
        self.mode, self.seed = mode, int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def generator(self, device) -> torch.Generator:
        """The seeded generator for batches on ``device`` (created on first use)."""
        key = str(device)
        g = self._generators.get(key)
        if g is None:
            try:
                g = torch.Generator(device=device)
            except RuntimeError:  # a device without its own generators: draw on the CPU
                g = torch.Generator()
            g.manual_seed(self.seed)
            self._generators[key] = g
        return g

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The augmented batch (same shape, dtype and device); fresh draws on every call."""
        dims, shape = _SHAPES[self.mode]
        if not (_floating(x) and x.dim() == dims):
            raise InputError(f"Expected a {dims}-D floating batch {shape} for --augment "
                             f"{self.mode}, got {_describe(x)}; use --augment auto or none")
        g = self.generator(x.device)
        with torch.no_grad():
            if self.mode == "image":
                return crop_flip(x, g)
            return scale(jitter(x, g), g)

    def __repr__(self) -> str:
        return f"Augmenter({self.mode!r}, seed={self.seed})"


def augmenter(mode: str, example, seed: int = 0) -> Augmenter | None:
    """The augmentation of a run's training batches, or None when they are not augmented.

    Parameters
    ----------
    mode : str
        ``"auto"``, ``"none"``, ``"image"`` or ``"series"`` (:attr:`TrainConfig.augment`).
    example : torch.Tensor or object
        A prepared training batch, e.g. its first two samples; decides ``"auto"`` and is
        checked against an explicit mode.
    seed : int
        The run's seed.

    Returns
    -------
    Augmenter or None

    Raises
    ------
    InputError
        As :func:`resolve`.
    """
    resolved = resolve(mode, example)
    return None if resolved == "none" else Augmenter(resolved, seed)
