"""Sufficient statistics of (features, labels), accumulated in chunks.

Several metrics (LogME, H-score, shrinkage H-score, SFDA's scatter matrices, GBC's class means)
need only the sample count, per-class counts, per-class feature sums and the D x D Gram matrix.
:class:`ClassStats` accumulates them chunk by chunk, so the in-memory metrics and the streaming
ones run the very same code and N is limited by time, not memory.

Numerics: every chunk is shifted by a fixed vector ``shift`` (the column mean when all data is at
hand, the first chunk's mean when streaming) before its Gram matrix is added. Centred quantities
then need only a rank-one correction by the small mean of the shifted data, which avoids the
catastrophic cancellation of ``X^T X - n m m^T`` on features with a large offset (post-ReLU
features are far from centred).

The Gram matrix is formed with a symmetric rank-k update (BLAS ``syrk``: half the flops of
``X.T @ X``) in float64, or in float32 chunks accumulated into float64 when
``gram_dtype="float32"`` (about twice as fast; score error of order 1e-9 relative on typical
features). In float32 each chunk is shifted in float64 and only then rounded (so a large offset
costs no precision), and the class sums come from the float64 shifted chunk (exact). torch's
CPU BLAS (MKL) was measured for the Gram on the 2-core AMD EPYC the benchmarks run on:
``torch.mm`` in float32 took 1.33 s for a 20000 x 2048 Gram against 0.61 s for OpenBLAS's
``ssyrk`` through numpy, so the CPU path stays on numpy/scipy's BLAS. With ``device="cuda"``
(or any torch device) the products run in torch on that device.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
from scipy.linalg import blas

from transferscope.errors import InputError

CHUNK_BYTES = 64 * 2**20


def chunk_rows(n_features: int, itemsize: int = 8) -> int:
    """Rows per chunk so that one chunk takes about ``CHUNK_BYTES``."""
    return int(max(256, CHUNK_BYTES // max(1, n_features * itemsize)))


def _check_gram_dtype(gram_dtype: str) -> np.dtype:
    if gram_dtype not in ("float64", "float32"):
        raise InputError(
            f"Expected gram_dtype 'float64' or 'float32', got {gram_dtype!r}; use float32 only "
            "for speed on large inputs"
        )
    return np.dtype(gram_dtype)


class ClassStats:
    """Chunk-wise accumulator of counts, class sums, the Gram matrix and fourth moments.

    Parameters
    ----------
    n_features : int
    n_classes : int
    shift : ndarray of shape (n_features,) or None
        Subtracted from every sample before accumulation; ``None`` takes the first chunk's mean.
    gram_dtype : {"float64", "float32"}
    device : str or None
        ``None`` computes with numpy/BLAS; a torch device string ("cpu", "cuda", "cuda:1")
        computes the products with torch on that device.
    moments : bool
        Also accumulate the fourth moments the Ledoit-Wolf shrinkage needs.
    """

    def __init__(self, n_features, n_classes, *, shift=None, gram_dtype="float64", device=None,
                 moments=False):
        self.n_features = int(n_features)
        self.n_classes = int(n_classes)
        self.gram_dtype = _check_gram_dtype(gram_dtype)
        self.device = device
        self.moments = moments
        self.shift = None if shift is None else np.asarray(shift, dtype=np.float64)
        self.n = 0
        self.counts = np.zeros(self.n_classes, dtype=np.int64)
        self.class_sums = np.zeros((self.n_classes, self.n_features))
        self.gram = np.zeros((self.n_features, self.n_features), order="F")
        self._lower_only = False  # syrk fills one triangle; finalize() mirrors it
        self.sum_sq_norm_sq = 0.0  # sum_k ||z_k||^4, for the Ledoit-Wolf shrinkage
        self.sum_norm_sq_z = np.zeros(self.n_features)  # sum_k ||z_k||^2 z_k

    @property
    def sum(self) -> np.ndarray:
        """Sum of the shifted samples."""
        return self.class_sums.sum(axis=0)

    # -- accumulation -------------------------------------------------------------------------
    def update(self, features: np.ndarray, codes: np.ndarray) -> ClassStats:
        """Add a chunk: ``features`` (m, D) float array, ``codes`` (m,) ints in 0..C-1."""
        if features.shape[1] != self.n_features:
            raise InputError(
                f"Expected chunks with {self.n_features} features, got {features.shape[1]}; "
                "every chunk must come from the same feature extractor"
            )
        if self.shift is None:
            self.shift = features.mean(axis=0, dtype=np.float64)
        if self.device is not None:
            self._update_torch(features, codes)
            return self
        step = chunk_rows(self.n_features, 8)
        # float32 products accumulate in float32 within one update() (as a single sgemm
        # would) and are added to the float64 total once, which halves the memory traffic;
        # the shift is subtracted in float64 first (then rounded), and the class sums and
        # moments come from that float64 chunk
        acc = None if self.gram_dtype == np.float64 else np.zeros_like(self.gram, np.float32)
        buf = np.empty((min(step, len(features)), self.n_features))
        buf32 = None if acc is None else np.empty(buf.shape, np.float32)
        for start in range(0, len(features), step):
            x = features[start : start + step]
            c = codes[start : start + step]
            z = np.subtract(x, self.shift, out=buf[: len(x)])
            self._add_counts_and_sums(z, c)
            if acc is None:
                self.gram = blas.dsyrk(1.0, z.T, c=self.gram, beta=1.0, trans=0, lower=1,
                                       overwrite_c=1)
            else:
                z32 = buf32[: len(x)]
                np.copyto(z32, z, casting="same_kind")
                acc = blas.ssyrk(1.0, z32.T, c=acc, beta=1.0, trans=0, lower=1, overwrite_c=1)
        if acc is not None:
            self.gram += acc
        self._lower_only = True
        return self

    def _add_counts_and_sums(self, z: np.ndarray, codes: np.ndarray) -> None:
        self.n += len(z)
        self.counts += np.bincount(codes, minlength=self.n_classes)
        self.class_sums += class_sums(z, codes, self.n_classes)
        if self.moments:
            z64 = z.astype(np.float64, copy=False)
            norm_sq = np.einsum("ij,ij->i", z64, z64)
            self.sum_sq_norm_sq += float(norm_sq @ norm_sq)
            self.sum_norm_sq_z += norm_sq @ z64

    def _update_torch(self, features: np.ndarray, codes: np.ndarray) -> None:
        import torch

        dtype = torch.float32 if self.gram_dtype == np.float32 else torch.float64
        shift = torch.from_numpy(self.shift).to(self.device)
        step = chunk_rows(self.n_features, self.gram_dtype.itemsize)
        for start in range(0, len(features), step):
            x = torch.from_numpy(np.ascontiguousarray(features[start : start + step]))
            zt = (x.to(self.device, torch.float64) - shift).to(dtype)
            c = codes[start : start + step]
            self._add_counts_and_sums(zt.double().cpu().numpy(), c)
            self.gram += (zt.T @ zt).double().cpu().numpy()

    # -- derived quantities -------------------------------------------------------------------
    def finalize(self) -> ClassStats:
        """Mirror the Gram matrix's filled triangle; call after the last update."""
        if self.n == 0:
            raise InputError("Expected at least one chunk of data, got none; pass some samples")
        if self._lower_only:
            g = np.ascontiguousarray(self.gram)
            g += np.tril(g, -1).T
            self.gram = g
            self._lower_only = False
        return self

    @property
    def mean(self) -> np.ndarray:
        return self.shift + self.sum / self.n

    @property
    def class_means(self) -> np.ndarray:
        return self.shift + self.class_sums / np.maximum(self.counts, 1)[:, None]

    def scatter(self) -> np.ndarray:
        """Centred scatter matrix sum_k (x_k - mean)(x_k - mean)^T."""
        d = self.sum / self.n
        return self.gram - self.n * np.outer(d, d)

    def raw_gram(self) -> np.ndarray:
        """Uncentred Gram matrix sum_k x_k x_k^T."""
        s, t = self.shift, self.sum
        return self.gram + np.outer(s, t) + np.outer(t, s) + self.n * np.outer(s, s)

    def raw_class_sums(self) -> np.ndarray:
        """Per-class sums of the uncentred features, shape (C, D)."""
        return self.class_sums + self.counts[:, None] * self.shift[None, :]

    def centered_fourth_moment(self) -> float:
        """sum_k ||x_k - mean||^4, from the shifted accumulators (needs ``moments=True``)."""
        if not self.moments:
            raise RuntimeError("ClassStats was built without moments=True")
        total = self.sum
        d = total / self.n
        c = float(d @ d)
        return (
            self.sum_sq_norm_sq
            + 4.0 * float(d @ self.gram @ d)
            + self.n * c * c
            - 4.0 * float(d @ self.sum_norm_sq_z)
            + 2.0 * c * float(np.trace(self.gram))
            - 4.0 * c * float(d @ total)
        )


def class_stats(features, codes, n_classes, *, gram_dtype="float64", device=None,
                moments=False) -> ClassStats:
    """Statistics of in-memory data, shifted by the exact column mean."""
    shift = features.mean(axis=0, dtype=np.float64)
    stats = ClassStats(features.shape[1], n_classes, shift=shift, gram_dtype=gram_dtype,
                       device=device, moments=moments)
    return stats.update(features, codes).finalize()


def row_space(features) -> tuple[np.ndarray, np.ndarray]:
    """An exact rotation of the rows onto an orthonormal basis of their span (for D > N).

    Thin Householder QR of ``features^T = Q R`` (O(N^2 D) flops): the coordinates ``R^T``
    satisfy ``R^T Q^T = features``, so every inner product, distance, mean and covariance of
    the rows is preserved, and a metric that is invariant to rotations of feature space (and
    blind to dimensions in which every row is 0) gives the same value on the N x N
    coordinates, at a cost driven by N. Metrics that use D itself (a shrinkage target
    ``tr(S) / D I``, a rank tolerance) are passed the original D.

    Parameters
    ----------
    features : ndarray of shape (N, D)

    Returns
    -------
    coords : ndarray of shape (N, min(N, D))
        The rows in the new basis, float64.
    basis : ndarray of shape (D, min(N, D))
        Orthonormal columns; ``coords @ basis.T`` equals ``features`` to rounding.
    """
    q, r = np.linalg.qr(np.asarray(features, dtype=np.float64).T)
    return np.ascontiguousarray(r.T), q


def class_sums(features: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class sums of rows, (C, D), in one sparse product (no Python loop over classes)."""
    onehot = scipy.sparse.csr_matrix(
        (np.ones(len(codes), dtype=features.dtype), (codes, np.arange(len(codes)))),
        shape=(n_classes, len(codes)),
    )
    return np.asarray(onehot @ features)


def matmul(a: np.ndarray, b: np.ndarray, *, device=None) -> np.ndarray:
    """``a @ b`` in float64: numpy/BLAS, or torch on ``device`` (e.g. "cuda") if given."""
    if device is None:
        return a @ b
    import torch

    at = torch.as_tensor(a, dtype=torch.float64, device=device)
    bt = torch.as_tensor(b, dtype=torch.float64, device=device)
    return (at @ bt).cpu().numpy()


def symmetric_eigh(matrix: np.ndarray, *, device=None, dtype="float64"):
    """Eigen-decomposition of a symmetric matrix, returned in float64.

    ``dtype="float32"`` solves in single precision (about 2x faster; eigenvalue errors of order
    1e-7 of the largest, so only for matrices whose spectrum that does not swamp): LAPACK's
    ``ssyevd`` on the CPU (0.58 s at D = 2048 on the benchmark machine, against 0.82 s for
    ``torch.linalg.eigh``), or torch on ``device``. Otherwise numpy's LAPACK (1.3 s at
    D = 2048; torch's took 1.41 s), or torch on ``device`` if one is given.

    Parameters
    ----------
    matrix : ndarray of shape (D, D)
        Symmetric.
    device : str or None
    dtype : {"float64", "float32"}

    Returns
    -------
    eigvals : ndarray of shape (D,)
        Ascending.
    eigvecs : ndarray of shape (D, D)
        Orthonormal columns.
    """
    if device is not None:
        import torch

        t = torch.from_numpy(matrix).to(device)
        w, v = torch.linalg.eigh(t.float() if dtype == "float32" else t)
        return w.double().cpu().numpy(), v.double().cpu().numpy()
    if dtype == "float32":
        from scipy.linalg import lapack

        w, v, info = lapack.ssyevd(matrix.astype(np.float32), compute_v=1, lower=1,
                                   overwrite_a=1)
        if info == 0:
            return w.astype(np.float64), v.astype(np.float64)
    # numpy's LAPACK, not scipy's: numpy and scipy each bundle an OpenBLAS with its own
    # spinning thread pool, and alternating between them (a numpy product, then a scipy
    # eigensolve) made a 400 x 400 LogME 2-4x slower on the 2-core benchmark machine
    return np.linalg.eigh(matrix)


REFLECTOR_BLOCK = 64  # Householder reflectors applied at once (compact WY form)
TRIDIAGONAL_MIN_SIZE = 1000  # eigh_projections avoids forming V from this matrix size on


def _apply_qt(packed: np.ndarray, tau: np.ndarray, b: np.ndarray) -> None:
    """``b <- Q^T b`` in place, Q = H(0) H(1) ... H(n-2) from LAPACK ``dsytrd`` (lower).

    Reflector i is ``H(i) = I - tau_i v v^T`` with ``v[:i+1] = 0``, ``v[i+1] = 1`` and
    ``v[i+2:] = packed[i+2:, i]``. Blocks of reflectors are applied in the compact WY form
    ``H(j) ... H(j+k-1) = I - V T V^T`` (T upper triangular, LAPACK's ``dlarft``), so
    ``Q^T b`` is a few matrix products per block instead of one rank-1 update per reflector.
    """
    n = packed.shape[0]
    for j0 in range(0, n - 1, REFLECTOR_BLOCK):
        j1 = min(n - 1, j0 + REFLECTOR_BLOCK)
        k = j1 - j0
        v = np.tril(packed[j0 + 1 :, j0:j1], -1)  # rows j0+1.., one column per reflector
        v[np.arange(k), np.arange(k)] = 1.0
        t = np.zeros((k, k))
        for i in range(k):
            t[i, i] = tau[j0 + i]
            if i:
                t[:i, i] = -tau[j0 + i] * (t[:i, :i] @ (v[:, :i].T @ v[:, i]))
        sub = b[j0 + 1 :]
        sub -= v @ (t.T @ (v.T @ sub))


def eigh_projections(matrix: np.ndarray, rhs: np.ndarray, *, device=None):
    """Eigenvalues of a symmetric matrix and the projections ``V^T rhs`` onto its eigenvectors,
    without forming V: all that LogME needs.

    LAPACK's ``dsytrd`` reduces ``matrix = Q T Q^T`` (T tridiagonal), ``Q^T rhs`` is applied
    in blocks of reflectors, and ``dstevd`` gives ``T = Z diag(w) Z^T``; then
    ``V^T rhs = Z^T Q^T rhs``. This skips the back-transformation ``V = Q Z`` (2 D^3 flops):
    1.0 s instead of 1.3 s for ``dsyevd`` + ``V^T rhs`` at D = 2048, T = 100 on the benchmark
    machine, float64 throughout, equal to 1e-15. Used for D >= 1000 and T < D / 2; otherwise
    (and on a torch device) the eigenvectors are formed and multiplied.

    Parameters
    ----------
    matrix : ndarray of shape (D, D)
        Symmetric (the lower triangle is read).
    rhs : ndarray of shape (D, T)
    device : str or None
        A torch device: then ``torch.linalg.eigh`` and an explicit product.

    Returns
    -------
    eigvals : ndarray of shape (D,)
        Ascending.
    projections : ndarray of shape (D, T)
        Row i is ``v_i^T rhs``.
    """
    from scipy.linalg import lapack

    n = matrix.shape[0]
    # the route saves the 2 D^3 back-transformation and costs 2 D^2 T for Q^T rhs: worth it
    # for T < D / 2, and only from D ~ 1000 on (below, Python overhead per block dominates)
    if device is None and n >= TRIDIAGONAL_MIN_SIZE and 2 * rhs.shape[1] < n:
        lwork = int(lapack.dsytrd_lwork(n, lower=1)[0])
        packed, diag, off, tau, info = lapack.dsytrd(matrix, lower=1, lwork=max(lwork, n))
        if info == 0:
            b = np.array(rhs, dtype=np.float64, order="C", copy=True)
            _apply_qt(packed, tau, b)
            w, z, info = lapack.dstevd(diag, off, compute_v=1)
            if info == 0:
                return w, z.T @ b
    w, v = symmetric_eigh(matrix, device=device)
    return w, v.T @ rhs
