"""Streaming: datasets that decode lazily, and batches through a torch ``DataLoader``.

Memory during extraction and training is bounded by the batch size and the loader's workers,
not by the dataset's size:

- :func:`open_image_folder` reads a class-folder directory as :class:`LazyImages`: the files
  are checked once (decoded one at a time, so corrupt files are named up front, as
  :func:`~transferscope.data.loaders.load_image_folder` names them) and every later access
  decodes the image again. Same arrays, labels and content fingerprint as the eager loader.
- Arrays (``np.memmap`` included), texts and series are indexed per item.
- :func:`batches` wraps any of them in a ``torch.utils.data.DataLoader``: an item dataset
  (:class:`Items`) read in the order of given index batches, collated by the backend's
  ``prepare`` in the worker (so batch ``b`` is exactly ``prepare(inputs[batch b])``, the tensor
  the in-memory path computes), ``num_workers`` processes, pinned memory for CUDA.
- :class:`Examples`: labelled samples (dataset, indices, class codes) that a training loop reads
  batch by batch in any order.

torch is imported when a loader is built, not with this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from transferscope.data.dataset import Dataset
from transferscope.errors import InputError


class LazyImages(Sequence):
    """Images of files, decoded on access, as the eager loader would hold them.

    Parameters
    ----------
    files : sequence of Path
        One file per image.
    mode : str
        ``"L"`` (all images grey: (H, W) arrays) or ``"RGB"`` ((H, W, 3) arrays).
    shapes : sequence of tuple of int
        Each image's array shape (checked when it is decoded again).
    stacked : bool
        Whether the eager loader holds these images as one array (every image of the folder
        had one shape) rather than a list: the fingerprint follows what it would hash.
    """

    def __init__(self, files, mode: str, shapes, stacked: bool = True):
        self.files = [Path(f) for f in files]
        self.mode = mode
        self.shapes = [tuple(s) for s in shapes]
        self.stacked = bool(stacked)
        self.fingerprints: dict = {}  # (kind, labels digest) -> fingerprint: decoded once

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        """Image ``i`` as a uint8 array (H, W) or (H, W, 3); a slice gives a list of them."""
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        from transferscope.data.loaders import _read_image

        f = self.files[i]
        try:
            a = np.asarray(_read_image(f).convert(self.mode))
        except ValueError as exc:
            raise InputError(f"Expected the readable image {f}, got: {exc}; it changed since "
                             "the folder was opened: open it again") from None
        if a.shape != self.shapes[i]:
            raise InputError(f"Expected image {f} of shape {self.shapes[i]}, got {a.shape}; it "
                             "changed since the folder was opened: open it again")
        return a

    def subset(self, indices) -> LazyImages:
        """The images at ``indices`` (in that order), still lazy."""
        idx = np.asarray(indices, dtype=np.int64)
        return LazyImages([self.files[i] for i in idx], self.mode,
                          [self.shapes[i] for i in idx], self.stacked)

    def update_digest(self, h) -> None:
        """Feed ``h`` (a hashlib object) exactly what :attr:`Dataset.fingerprint` feeds it for
        the eagerly loaded images: one (N, H, W[, 3]) uint8 array when they are
        :attr:`stacked`, else each image with its length, shape and dtype. Images are decoded
        one at a time."""
        if self.stacked:
            h.update(str((len(self), *self.shapes[0])).encode() + b"uint8")
            for i in range(len(self)):
                h.update(np.ascontiguousarray(self[i]).tobytes())
            return
        for i in range(len(self)):
            a = np.ascontiguousarray(self[i])
            b = str(a.shape).encode() + str(a.dtype).encode() + a.tobytes()
            h.update(len(b).to_bytes(8, "little") + b)


def open_image_folder(root, *, skip_corrupt: bool = False) -> Dataset:
    """A class-folder directory (``root/<class>/<image>``) as a lazily decoded dataset.

    The same images, labels, order, errors and fingerprint as
    :func:`~transferscope.data.loaders.load_image_folder`, but no image is kept in memory:
    each file is decoded once here (to check it and learn its mode and shape) and again
    whenever it is read.

    Parameters
    ----------
    root : str or Path
        The folder whose sub-folders are the classes.
    skip_corrupt : bool
        Skip unreadable files (named in a warning) instead of stopping.

    Returns
    -------
    Dataset
        Of kind ``"image"`` with :class:`LazyImages` inputs (uint8 (H, W) if every image is
        grey, else (H, W, 3)); labels the folder names.

    Raises
    ------
    InputError
        As the eager loader: no class folders, an empty or nested class folder, unreadable
        files without ``skip_corrupt``.
    """
    from transferscope.data.loaders import _read_image, scan_image_folder

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"Expected a folder of class folders, got {root}; pass the folder "
                         "whose sub-folders are the classes")

    def header(path):
        im = _read_image(path)
        im.close()
        return path, im.mode, im.size

    found, labels = scan_image_folder(root, header, skip_corrupt=skip_corrupt)
    files = [f for f, _, _ in found]
    modes = [m for _, m, _ in found]
    sizes = [size for _, _, size in found]
    mode = "L" if all(m == "L" for m in modes) else "RGB"
    shapes = [(h, w) if mode == "L" else (h, w, 3) for w, h in sizes]
    images = LazyImages(files, mode, shapes, stacked=len(set(shapes)) == 1)
    return Dataset(root.name, "image", images, labels, {"root": str(root)})


class Items:
    """A map-style torch dataset: item ``i`` is ``(inputs[indices[i]], target i or -1)``.

    Parameters
    ----------
    inputs : sequence
        A dataset's inputs (array, memmap, list, :class:`LazyImages`); read one item at a time.
    indices : ndarray of int, shape (n,)
        Which inputs, in order.
    targets : ndarray of int, shape (n,), optional
        Class codes.
    """

    def __init__(self, inputs, indices, targets=None):
        self.inputs = inputs
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = None if targets is None else np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        target = -1 if self.targets is None else int(self.targets[i])
        return self.inputs[int(self.indices[i])], target


class _Failed:
    """A batch whose preparation refused the input: the one-line message travels back from a
    worker as a value (a worker's exception would come back with its traceback)."""

    def __init__(self, message: str):
        self.message = message


class _Collate:
    """``prepare`` of a batch of raw items, and their targets as an int64 tensor (picklable
    for workers started without fork)."""

    def __init__(self, prepare, data):
        self.prepare, self.data = prepare, data

    def __call__(self, items):
        import torch

        try:
            x = self.prepare([item for item, _ in items], self.data)
        except InputError as exc:
            return _Failed(str(exc))
        return x, torch.as_tensor([t for _, t in items], dtype=torch.int64)


class Batches:
    """An iterable of ``(x, y)`` batches over a ``DataLoader`` (:attr:`loader`); an input the
    preparation refuses raises its one-line :class:`InputError` here, in the caller's process.
    """

    def __init__(self, loader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            if isinstance(batch, _Failed):
                raise InputError(batch.message)
            yield batch


def check_workers(num_workers) -> int:
    """``num_workers`` if it is a whole number >= 0, else a one-line :class:`InputError`."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) \
            or num_workers < 0:
        raise InputError(f"Expected num_workers >= 0 (loader processes; 0 reads in this "
                         f"process), got {num_workers!r}; e.g. --num-workers 2")
    return int(num_workers)


def batches(data: Dataset, prepare, order, *, targets=None, num_workers: int = 0,
            pin_memory: bool = False, prefetch: int = 2):
    """A ``DataLoader`` giving ``(x, y)`` for each index batch of ``order``.

    Parameters
    ----------
    data : Dataset
        Whose inputs are read, one item at a time.
    prepare : callable
        ``prepare(list of raw inputs, data) -> Tensor (B, ...)`` (a backend's ``prepare``),
        run in the loader's workers.
    order : sequence of ndarray of int
        Index batches into ``data``, in the order they are wanted.
    targets : ndarray of int, shape (len(data),), optional
        Class codes of the whole dataset (``y`` is ``targets[batch]``; -1 without).
    num_workers : int
        Loader processes (0: this process). Workers are forked where the platform can, so the
        backend is not pickled.
    pin_memory : bool
        Page-locked batches (for CUDA).
    prefetch : int
        Batches each worker prepares ahead (memory: about ``num_workers * prefetch`` batches).

    Returns
    -------
    Batches
        Yielding ``(Tensor (B, ...), Tensor (B,) int64)`` in the order of ``order``.
    """
    import multiprocessing

    import torch

    num_workers = check_workers(num_workers)
    order = [np.asarray(b, dtype=np.int64) for b in order]
    flat = np.concatenate(order) if order else np.zeros(0, np.int64)
    items = Items(data.inputs, flat, None if targets is None else np.asarray(targets)[flat])
    positions, start = [], 0
    for b in order:  # batches of positions into `items`
        positions.append(list(range(start, start + len(b))))
        start += len(b)
    opts = {}
    collate = _Collate(prepare, data)
    if num_workers:
        opts["prefetch_factor"] = prefetch
        if len(items):  # refusals and once-per-process checks happen here, before the fork
            first = collate([items[0]])
            if isinstance(first, _Failed):
                raise InputError(first.message)
        if "fork" in multiprocessing.get_all_start_methods():
            opts["multiprocessing_context"] = "fork"
    return Batches(torch.utils.data.DataLoader(
        items, batch_sampler=positions, num_workers=num_workers, collate_fn=collate,
        pin_memory=pin_memory, **opts))


class Examples:
    """Labelled samples of a dataset, prepared batch by batch when read.

    What a training loop and an evaluation read instead of one tensor of every prepared
    input: ``len``, the first few prepared samples (:meth:`head`), and :meth:`loader` over any
    order of index batches.

    Parameters
    ----------
    data : Dataset
        The whole dataset.
    indices : ndarray of int, shape (n,)
        The samples (positions in ``data``).
    targets : ndarray of int, shape (n,)
        Their class codes.
    prepare : callable
        ``prepare(list of raw inputs, data) -> Tensor (B, ...)``.
    num_workers : int
        Loader processes.
    """

    def __init__(self, data: Dataset, indices, targets, prepare, num_workers: int = 0):
        self.data = data
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.prepare = prepare
        self.num_workers = check_workers(num_workers)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def y(self):
        """The class codes, Tensor (n,) int64."""
        import torch

        return torch.as_tensor(self.targets)

    def head(self, n: int = 2):
        """The first ``n`` samples prepared: Tensor (n, ...)."""
        return self.prepare([self.data.inputs[int(i)] for i in self.indices[:n]], self.data)

    def loader(self, order, *, pin_memory: bool = False):
        """``(x, y)`` batches for ``order`` (index batches into these samples, 0..n-1).

        Parameters
        ----------
        order : sequence of ndarray of int
        pin_memory : bool

        Returns
        -------
        Batches
        """
        codes = np.full(len(self.data), -1, np.int64)
        codes[self.indices] = self.targets  # a sample listed twice has one code
        return batches(self.data, self.prepare, [self.indices[np.asarray(b)] for b in order],
                       targets=codes, num_workers=self.num_workers, pin_memory=pin_memory)
