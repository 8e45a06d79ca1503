"""The numerical work behind :mod:`transferscope.metrics.probes` (``knn`` and ``linear_probe``).

- :func:`fold_ids`: the seeded stratified k-fold split, as one fold number per sample.
- :func:`knn_neighbours`: each sample's nearest samples outside its own fold, from float32 tiles
  of one matrix product each (``||a||^2 + ||b||^2 - 2 a.b`` in one product of augmented rows);
  a tile between two folds serves both, so each cross-fold pair is computed once; a running
  top-(k + 4) per row; rows whose float32 order is within the rounding error of a tie are
  re-ranked in float64, so the neighbours are the exact ones (exact ties: lower index first).
  With more features than samples the N x N float64 Gram matrix is formed once instead.
- :func:`probe_folds`: every fold's standardised training problem, from one shifted copy of the
  data in fold order and one Gram matrix per fold block (a training part's Gram matrix is the
  total minus its fold's); with more features than samples, the equivalent coordinates in the
  eigenbasis of each fold's training kernel (cost set by N, not D).
- :func:`logistic_lbfgs_whitened`: L2-regularised multinomial logistic regression by L-BFGS in
  coordinates whitened by the Cholesky factor of the feature covariance, with a line search on
  cached logits (two products with the features per iteration).
- :func:`logistic_lbfgs_torch`: the earlier solver, full-batch torch L-BFGS.
- :func:`ridge_weights`: the closed-form one-vs-rest ridge (least-squares) classifier.
"""

from __future__ import annotations

import numpy as np

from transferscope.errors import InputError
from transferscope.metrics._stats import class_sums

BLOCK_BYTES = 64 * 2**20  # one distance tile / one refinement chunk
GRAM_BYTES = 128 * 2**20  # the N x N float64 Gram matrix of the D > N paths
EPS32 = float(np.finfo(np.float32).eps)


def fold_ids(codes: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Test-fold number of every sample under seeded stratified k-fold.

    Parameters
    ----------
    codes : ndarray of shape (n_samples,)
        Class codes.
    folds : int
        Number of folds (>= 2).
    seed : int
        ``random_state`` of scikit-learn's ``StratifiedKFold(shuffle=True)``.

    Returns
    -------
    ndarray of shape (n_samples,)
        Fold of each sample, in ``0..folds-1`` (the k-th ``split`` has test fold k).
    """
    from sklearn.model_selection import StratifiedKFold

    if folds < 2:
        raise InputError(f"Expected folds >= 2, got {folds}; use 5 or 10")
    out = np.empty(len(codes), dtype=np.int64)
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(split.split(np.zeros(len(codes)), codes)):
        out[test] = k
    return out


# -- k nearest neighbours ---------------------------------------------------------------------


def knn_neighbours(x, fold, n_neighbors, *, block_rows=None, device=None):
    """The ``n_neighbors`` nearest samples of every sample among the samples of other folds.

    Parameters
    ----------
    x : ndarray of shape (n_samples, n_features)
        Features (float64 or float32).
    fold : ndarray of shape (n_samples,)
        Fold of each sample (:func:`fold_ids`); a sample's candidates are the other folds' samples.
    n_neighbors : int
        Neighbours wanted (fewer where a fold's training part is smaller).
    block_rows : int, optional
        Rows per side of a distance tile (default: a 64 MiB float32 tile).
    device : str, optional
        A torch device for the tile products (default: numpy on the CPU).

    Returns
    -------
    ndarray of shape (n_samples, n_neighbors)
        Neighbour indices, nearest first, exact Euclidean order (ties: lower index first);
        -1 where a row has fewer candidates.
    """
    if block_rows is not None and block_rows < 1:
        raise InputError(f"Expected block_rows >= 1, got {block_rows}; leave it unset")
    n, d = x.shape
    if d > n and n * n * 8 <= GRAM_BYTES:
        return _neighbours_gram(x, fold, n_neighbors)
    if block_rows is None:
        block_rows = int(np.sqrt(BLOCK_BYTES / 4))
    n_cand = n_neighbors + 4
    order = np.argsort(fold, kind="stable")
    shift = x.mean(axis=0, dtype=np.float64)  # distances are translation invariant
    xs = np.empty((n, d + 2), dtype=np.float32)  # [x - shift, ||x - shift||^2, 1]
    sq = np.empty(n)
    step = max(1, BLOCK_BYTES // (8 * d))
    for s in range(0, n, step):
        rows = x[order[s : s + step]].astype(np.float64) - shift
        sq[s : s + step] = np.einsum("ij,ij->i", rows, rows)
        xs[s : s + step, :d] = rows
    xs[:, d] = sq
    xs[:, d + 1] = 1.0
    dist, idx = _candidates(xs, fold[order], n_cand, block_rows, device)
    # float32 error of one squared distance: generous multiple of sqrt(D) eps (|a|^2 + |b|^2)
    err = 8.0 * np.sqrt(d + 2) * EPS32 * (sq + sq.max())
    nbrs = _resolve(x, order, fold[order], dist, idx, err, n_neighbors)
    out = np.full((n, n_neighbors), -1, dtype=np.int64)
    valid = nbrs >= 0
    out[order] = np.where(valid, order[np.maximum(nbrs, 0)], -1)
    return out


def _tile_blocks(fold_sorted, block_rows):
    """(fold, start, stop) row ranges of at most ``block_rows`` rows inside one fold each."""
    bounds = np.flatnonzero(np.diff(fold_sorted)) + 1
    starts = np.concatenate([[0], bounds])
    stops = np.concatenate([bounds, [len(fold_sorted)]])
    return [(int(fold_sorted[a]), s, min(s + block_rows, b))
            for a, b in zip(starts, stops, strict=True) for s in range(a, b, block_rows)]


def _merge(best_d, best_i, new_d, new_i, k):
    """Keep the k smallest of two (rows, k) candidate sets (torch tensors), in place."""
    import torch

    d = torch.cat([best_d, new_d], dim=1)
    i = torch.cat([best_i, new_i], dim=1)
    top, pos = torch.topk(d, k, dim=1, largest=False)
    best_d.copy_(top)
    best_i.copy_(torch.gather(i, 1, pos))


def _candidates(xs, fold_sorted, n_cand, block_rows, device):
    """Float32 squared distances and indices of the ``n_cand`` nearest other-fold rows."""
    import torch

    n, width = xs.shape
    best_d = torch.full((n, n_cand), float("inf"), dtype=torch.float32)
    best_i = torch.full((n, n_cand), -1, dtype=torch.int64)
    blocks = _tile_blocks(fold_sorted, block_rows)
    buf = np.empty(block_rows * block_rows, dtype=np.float32)
    for q, (fq, b0, b1) in enumerate(blocks):
        # [-2 (x - shift), 1, ||x - shift||^2] for block q: xs[p] @ right.T = squared distances
        right = np.empty((b1 - b0, width), dtype=np.float32)
        np.multiply(xs[b0:b1, : width - 2], -2.0, out=right[:, : width - 2])
        right[:, width - 2] = 1.0
        right[:, width - 1] = xs[b0:b1, width - 2]
        if device is not None:
            right_t = torch.as_tensor(right, device=device)
        for fp, a0, a1 in blocks[:q]:
            if fp == fq:
                continue
            if device is None:
                tile_np = buf[: (a1 - a0) * (b1 - b0)].reshape(a1 - a0, b1 - b0)
                np.matmul(xs[a0:a1], right.T, out=tile_np)
                tile = torch.from_numpy(tile_np)
            else:
                tile = torch.as_tensor(xs[a0:a1], device=device) @ right_t.T
            kr = min(n_cand, b1 - b0)
            d_r, i_r = torch.topk(tile, kr, dim=1, largest=False)
            _merge_rows(best_d, best_i, a0, a1, d_r.cpu(), i_r.cpu() + b0, n_cand)
            kc = min(n_cand, a1 - a0)
            d_c, i_c = torch.topk(tile.T.contiguous(), kc, dim=1, largest=False)
            _merge_rows(best_d, best_i, b0, b1, d_c.cpu(), i_c.cpu() + a0, n_cand)
    return best_d.numpy(), best_i.numpy()


def _merge_rows(best_d, best_i, r0, r1, new_d, new_i, n_cand):
    if new_d.shape[1] < n_cand:
        import torch

        pad = n_cand - new_d.shape[1]
        new_d = torch.cat([new_d, torch.full((len(new_d), pad), float("inf"))], dim=1)
        new_i = torch.cat([new_i, torch.full((len(new_i), pad), -1, dtype=torch.int64)], dim=1)
    _merge(best_d[r0:r1], best_i[r0:r1], new_d, new_i, n_cand)


def _resolve(x, order, fold_sorted, dist, idx, err, k):
    """Exact k nearest from float32 candidates (sorted ascending): where two of a row's first
    k + 1 candidates are within twice the float32 error, its candidates are re-ranked in float64;
    where even the last candidate is within it of the k-th (a closer row may have been missed),
    the row is searched exhaustively in float64. Ties go to the lower index."""
    n, n_cand = dist.shape
    with np.errstate(invalid="ignore"):  # inf - inf where a row has fewer candidates
        gaps = np.diff(dist[:, : k + 1], axis=1)
        ambiguous = (gaps <= 2 * err[:, None]).any(axis=1)
        unsure = dist[:, -1] - dist[:, k - 1] <= 2 * err
    out = idx[:, :k].copy()
    rows = np.flatnonzero(ambiguous & ~unsure)
    step = max(1, BLOCK_BYTES // (8 * n_cand * x.shape[1]))
    for s in range(0, len(rows), step):
        r = rows[s : s + step]
        cand = idx[r]
        exact = _exact_sq_dist(x, order[r], order[np.maximum(cand, 0)])
        exact[cand < 0] = np.inf
        best = np.lexsort((order[np.maximum(cand, 0)], exact), axis=1)[:, :k]
        out[r] = np.take_along_axis(cand, best, axis=1)
    unsure = np.flatnonzero(unsure)  # rare: brute force over the rows' whole training sets
    for f in np.unique(fold_sorted[unsure]):
        rows = unsure[fold_sorted[unsure] == f]
        train = np.flatnonzero(fold_sorted != f)
        for s in range(0, len(rows), 64):
            r = rows[s : s + 64]
            exact = _exact_sq_dist(x, order[r], np.broadcast_to(order[train], (len(r), len(train))))
            best = np.lexsort((np.broadcast_to(order[train], exact.shape), exact), axis=1)[:, :k]
            out[r, : best.shape[1]] = train[best]
    return out


def _exact_sq_dist(x, rows, cols):
    """Float64 squared distances ``||x[rows[i]] - x[cols[i, j]]||^2``, shape of ``cols``."""
    a = x[rows].astype(np.float64)
    out = np.empty(cols.shape)
    step = max(1, BLOCK_BYTES // (8 * x.shape[1] * max(1, len(rows))))
    for s in range(0, cols.shape[1], step):
        diff = x[cols[:, s : s + step]].astype(np.float64) - a[:, None, :]
        out[:, s : s + step] = np.einsum("ijk,ijk->ij", diff, diff)
    return out


def _neighbours_gram(x, fold, k):
    """D > N: one N x N float64 Gram matrix; every fold's candidates are read from it and
    resolved like the tiled path's (with float64's rounding error)."""
    n, d = x.shape
    xc = x - x.mean(axis=0, dtype=np.float64)
    gram = xc @ xc.T
    sq = np.diag(gram).copy()
    n_cand = k + 4
    dist = np.full((n, n_cand), np.inf)
    idx = np.full((n, n_cand), -1, dtype=np.int64)
    for f in np.unique(fold):
        test = np.flatnonzero(fold == f)
        train = np.flatnonzero(fold != f)
        dd = sq[test, None] + sq[None, train] - 2.0 * gram[np.ix_(test, train)]
        kf = min(n_cand, len(train))
        best = np.argsort(dd, axis=1, kind="stable")[:, :kf]
        dist[test, :kf] = np.take_along_axis(dd, best, axis=1)
        idx[test, :kf] = train[best]
    err = 8.0 * np.sqrt(d) * np.finfo(np.float64).eps * (sq + sq.max())
    return _resolve(x, np.arange(n), fold, dist, idx, err, k)


def knn_vote(neighbour_codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Majority class of each row of neighbour labels (nearest first; -1 = none), ties broken
    by the nearest neighbour among the tied classes.

    Parameters
    ----------
    neighbour_codes : ndarray of shape (n_samples, k)
    n_classes : int

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    n = len(neighbour_codes)
    valid = neighbour_codes >= 0
    votes = np.where(valid, neighbour_codes, 0)
    counts = np.zeros((n, n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), votes.shape[1]), votes.ravel()),
              valid.ravel().astype(np.int64))
    best = counts.max(axis=1, keepdims=True)
    is_tied = (np.take_along_axis(counts, votes, axis=1) == best) & valid
    return votes[np.arange(n), is_tied.argmax(axis=1)]


# -- linear probes ----------------------------------------------------------------------------


def _softmax_stats(logits, codes):
    """Mean cross-entropy of float32 ``logits`` (n, C) and the softmax probabilities.

    Logits more than 60 below a row's maximum count as -60 in ``exp`` (a change of under 1e-26
    in any probability), which keeps the probabilities out of float32's subnormal range (slow
    arithmetic on x86).
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    picked = shifted[np.arange(len(codes)), codes].astype(np.float64)
    np.maximum(shifted, -60.0, out=shifted)
    probs = np.exp(shifted, out=shifted)
    norm = probs.sum(axis=1, keepdims=True)
    probs /= norm
    loss = float(np.mean(np.log(norm[:, 0], dtype=np.float64) - picked))
    return loss, probs


def _to32(a):
    """float32 copy with values below float32's normal range set to zero (see above)."""
    out = a.astype(np.float32)
    out[np.abs(out) < 1e-30] = 0.0
    return out


class Whitener:
    """``W = M^T V`` and the adjoint map of gradients ``g_V = M g_W`` for ``M = L^-1`` (lower
    triangular, formed once) or a positive diagonal ``1 / l``.

    Products with the explicit inverse keep every operation of the iteration in numpy's BLAS:
    interleaving scipy's (a second OpenBLAS with its own spinning threads) slowed each
    iteration several-fold on two cores. ``M`` need not be an exact inverse: the two maps are
    adjoint, so the minimiser is the same; only the conditioning depends on it.
    """

    def __init__(self, factor):
        self.diagonal = factor.ndim == 1
        if self.diagonal:
            self.inverse = 1.0 / factor
        else:
            from scipy.linalg import lapack

            inverse, info = lapack.dtrtri(np.asfortranarray(factor), lower=1)
            self.inverse = inverse if info == 0 else np.linalg.inv(factor)

    def weights(self, v):
        """W from whitened V."""
        return v * self.inverse[:, None] if self.diagonal else self.inverse.T @ v

    def gradient(self, g_w):
        """Gradient with respect to V from the gradient with respect to W."""
        return g_w * self.inverse[:, None] if self.diagonal else self.inverse @ g_w


def logistic_lbfgs_whitened(products, codes, n_classes, lam, factor, class_sums_, *,
                            w0=None, b0=None, max_iter=100, tol=1e-5, history=10):
    """Minimise ``mean cross-entropy(x W + b) + lam / 2 ||W||^2`` by L-BFGS in whitened
    coordinates ``V = L^T W``, where ``L L^T`` approximates the feature covariance (the curvature
    of the loss is then close to isotropic in V, so far fewer iterations are needed than in W).

    Each iteration costs two float32 products with the features (the direction's logits ``dZ``
    and the gradient); every trial step of the line search is evaluated on the cached logits
    ``Z + t dZ`` without a product (Nocedal & Wright, "Numerical Optimization", 2nd ed., Alg. 7.4
    for the two-loop recursion, sec. 3.1 for the Wolfe conditions; Minka 2003, "A comparison of
    numerical optimizers for logistic regression", for the cheap line search of linear models).
    The start is the Newton step of the loss's quadratic model at zero, a ridge fit.

    Parameters
    ----------
    products : BlockProducts or DenseProducts
        Products ``x @ w`` and ``x.T @ r`` with the (standardised, centred) training features
        ``x`` of shape (n_samples, n_features).
    codes : ndarray of shape (n_samples,)
        Class codes in ``0..n_classes-1``, in the row order of ``products``.
    n_classes : int
    lam : float
        L2 strength on the mean loss (scikit-learn's ``1 / (C n)``).
    factor : ndarray of shape (n_features, n_features) or (n_features,), or Whitener
        Lower Cholesky factor ``L`` (or the square roots of a diagonal) of the preconditioner,
        or a whitener already built from one.
    class_sums_ : ndarray of shape (n_features, n_classes)
        ``x.T @ Y`` for the one-hot labels (the gradient at zero).
    w0 : ndarray of shape (n_features, n_classes), optional
        Start (default: the Newton step of the loss's quadratic model at zero, a ridge fit).
    b0 : ndarray of shape (n_classes,), optional
    max_iter : int
        Iterations at most.
    tol : float
        Stop when every entry of the whitened gradient is at most ``tol`` in magnitude.
    history : int
        Correction pairs kept.

    Returns
    -------
    w : ndarray of shape (n_features, n_classes)
    b : ndarray of shape (n_classes,)
    n_iter : int
        Iterations done.
    converged : bool
        Whether it stopped for convergence (gradient below ``tol``, or no further decrease
        possible in floating point) rather than at ``max_iter``.
    """
    white = factor if isinstance(factor, Whitener) else Whitener(factor)
    n, d = len(codes), len(white.inverse)
    rows = np.arange(n)
    prod = products

    def gradient(w, probs):
        r = probs.copy()  # n * dloss/dlogits; divided by n after the product (no subnormals)
        r[rows, codes] -= 1.0
        g_w = prod.t(r).astype(np.float64) / n + lam * w
        return np.concatenate([white.gradient(g_w).ravel(), r.sum(axis=0, dtype=np.float64) / n])

    if w0 is None:
        prior = np.bincount(codes, minlength=n_classes) / n
        # quadratic model of the loss at W = 0 (x centred): Hessian (I - 11^T / C) / C (x) cov,
        # gradient -x^T Y / n; its Newton step is a ridge fit, scaled by C
        w = n_classes * white.weights(white.gradient(class_sums_ / n))
        b = np.log(np.maximum(prior, 1e-12))
    else:
        w, b = np.asarray(w0, dtype=np.float64), np.asarray(b0, dtype=np.float64)
    z = prod(_to32(w)) + b.astype(np.float32)
    loss, probs = _softmax_stats(z, codes)
    f = loss + 0.5 * lam * float((w * w).sum())
    g = gradient(w, probs)
    s_list, y_list, rho = [], [], []
    n_iter = 0
    while np.abs(g).max() > tol:
        if n_iter == max_iter:
            return w, b, n_iter, False
        n_iter += 1
        # two-loop recursion: direction = -H g
        q = g.copy()
        alphas = []
        for s_k, y_k, r_k in zip(reversed(s_list), reversed(y_list), reversed(rho),
                                 strict=True):
            a = r_k * (s_k @ q)
            alphas.append(a)
            q -= a * y_k
        q *= (s_list[-1] @ y_list[-1]) / (y_list[-1] @ y_list[-1]) if s_list else n_classes
        for (s_k, y_k, r_k), a in zip(zip(s_list, y_list, rho, strict=True), reversed(alphas),
                                      strict=True):
            q += (a - r_k * (y_k @ q)) * s_k
        direction = -q
        slope0 = float(g @ direction)
        if slope0 >= 0:  # not a descent direction: restart from steepest descent
            s_list, y_list, rho = [], [], []
            direction = -g * (1.0 / max(1.0, np.abs(g).max()))
            slope0 = float(g @ direction)
        dv = direction[: d * n_classes].reshape(d, n_classes)
        db = direction[d * n_classes :]
        dw = white.weights(dv)
        dz = prod(_to32(dw)) + db.astype(np.float32)
        t, f_new, probs = _line_search(z, dz, codes, f, slope0, lam, w, dw)
        if t == 0.0:  # no decrease along a descent direction: converged to float precision
            break
        w = w + t * dw
        b = b + t * db
        z += np.float32(t) * dz
        g_new = gradient(w, probs)
        s_k, y_k = t * direction, g_new - g
        sy = float(s_k @ y_k)
        if sy > 1e-12 * float(y_k @ y_k):
            s_list.append(s_k)
            y_list.append(y_k)
            rho.append(1.0 / sy)
            if len(s_list) > history:
                s_list.pop(0), y_list.pop(0), rho.pop(0)
        stalled = f - f_new <= 1e-12 * max(1.0, abs(f))
        f, g = f_new, g_new
        if stalled:
            break
    return w, b, n_iter, True


def _line_search(z, dz, codes, f0, slope0, lam, w, dw, max_eval=10):
    """Step length along ``dz`` (logits) / ``dw`` (weights) satisfying the strong Wolfe
    conditions (c1 = 1e-4, c2 = 0.9; Nocedal & Wright, sec. 3.1), trying t = 1 first and then
    safeguarded Newton steps on the convex 1-D function phi(t), whose derivatives come from the
    cached logits without any product with the features. Returns (t, phi(t), probabilities at
    t); t = 0 if no tried step decreased phi."""
    n = z.shape[0]
    rows = np.arange(n)
    dz_true = float(dz[rows, codes].sum(dtype=np.float64))
    ww, wd, dd = float((w * w).sum()), float((w * dw).sum()), float((dw * dw).sum())
    lo, hi, t = 0.0, np.inf, 1.0
    best = (0.0, f0, None)
    for _ in range(max_eval):
        loss, probs = _softmax_stats(z + np.float32(t) * dz, codes)
        f = loss + 0.5 * lam * (ww + 2 * t * wd + t * t * dd)
        pd = np.einsum("ij,ij->i", probs, dz, dtype=np.float64)
        slope = float(pd.sum() - dz_true) / n + lam * (wd + t * dd)
        if f < best[1]:
            best = (t, f, probs)
        if f <= f0 + 1e-4 * t * slope0 and abs(slope) <= 0.9 * abs(slope0):
            return t, f, probs
        if slope > 0:
            hi = t
        else:
            lo = t
        pdd = np.einsum("ij,ij,ij->i", probs, dz, dz, dtype=np.float64)
        curv = float(pdd.sum() - pd @ pd) / n + lam * dd
        step = t - slope / curv if curv > 0 else np.inf
        if not (lo < step < hi):
            step = 0.5 * (lo + hi) if np.isfinite(hi) else 2.0 * t
        t = float(step)
    if best[2] is None:
        return 0.0, f0, None
    return float(best[0]), best[1], best[2]


class DenseProducts:
    """Products with an explicit float32 matrix ``x`` (n, p), on the CPU or a torch device."""

    def __init__(self, x, device=None):
        self.x = x
        self.device = device
        if device is not None:
            import torch

            self._t = torch.as_tensor(x, device=device)

    def __call__(self, w):
        """``x @ w`` for float32 ``w`` (p, C)."""
        if self.device is None:
            return self.x @ w
        import torch

        return (self._t @ torch.as_tensor(w, device=self.device)).cpu().numpy()

    def t(self, r):
        """``x.T @ r`` for float32 ``r`` (n, C)."""
        if self.device is None:
            return self.x.T @ r
        import torch

        return (self._t.T @ torch.as_tensor(r, device=self.device)).cpu().numpy()


class BlockProducts:
    """Products with the standardised training rows ``(xs[rows] - delta) / scale`` of one fold,
    where ``xs`` holds every sample (shifted, in fold order) and the training rows are the
    other folds' contiguous blocks: no per-fold copy, the standardisation is folded into the
    weights (``x~ w = xs (w / scale) - (delta / scale) . w``)."""

    def __init__(self, xs, ranges, delta, scale):
        self.xs = xs
        self.ranges = ranges
        self.n = sum(stop - start for start, stop in ranges)
        self.inv = (1.0 / scale).astype(np.float32)
        self.delta = delta

    def __call__(self, w):
        """``x~ @ w`` (n, C) float32."""
        u = w * self.inv[:, None]
        out = np.empty((self.n, w.shape[1]), dtype=np.float32)
        pos = 0
        for start, stop in self.ranges:
            np.matmul(self.xs[start:stop], u, out=out[pos : pos + stop - start])
            pos += stop - start
        out -= (self.delta @ u.astype(np.float64)).astype(np.float32)
        return out

    def t(self, r):
        """``x~.T @ r`` (p, C) float32."""
        acc = None
        pos = 0
        for start, stop in self.ranges:
            part = self.xs[start:stop].T @ r[pos : pos + stop - start]
            acc = part if acc is None else acc.__iadd__(part)
            pos += stop - start
        acc -= np.outer(self.delta, r.sum(axis=0, dtype=np.float64)).astype(np.float32)
        acc *= self.inv[:, None]
        return acc


class FoldProblem:
    """One fold's probe problem in the coordinates the solvers see.

    Attributes
    ----------
    train, test : ndarray of int
        Sample indices; ``train`` in the order of the rows ``products`` sees.
    products : BlockProducts or DenseProducts
        Products with the standardised training features (or their kernel-eigenbasis
        coordinates when ``dual``).
    gram : ndarray of shape (p, p) or (p,), or None
        ``x~^T x~`` in float64 (the kernel's eigenvalues when ``dual``), if requested.
    class_sums : ndarray of shape (p, n_classes), or None
        ``x~^T Y`` in float64 for the one-hot labels, if the Gram matrix was requested.
    dual : bool
        Whether the coordinates are the training kernel's eigenbasis.
    """

    def __init__(self, *, train, test, products, gram, class_sums, dual, test_features,
                 dense_train):
        self.train, self.test = train, test
        self.products, self.gram, self.class_sums, self.dual = (products, gram, class_sums,
                                                                dual)
        self._test_features, self._dense_train = test_features, dense_train

    def test_logits(self, w, b):
        """Logits ``x~_test w + b`` (n_test, C) of the held-out samples."""
        return self._test_features(_to32(w)) + np.asarray(b, dtype=np.float32)

    def dense_train(self):
        """The standardised training features as one float32 array (n_train, p)."""
        return self._dense_train()


def probe_folds(x, codes, fold, n_classes, *, gram=None, dual=None, device=None):
    """Yield a :class:`FoldProblem` per fold: features standardised with the training part's
    mean and standard deviation (constant columns left unscaled, as scikit-learn's
    ``StandardScaler`` does).

    With more features than samples (D > N) the probe is solved in the eigenbasis of the
    training kernel ``K = Xs Xs^T = U diag(s) U^T``: ``Z = U diag(sqrt(s))`` for the training
    rows and ``Xs_test Xs^T U diag(1/sqrt(s))`` for the test rows have the same inner products
    as the standardised features, and an L2-penalised linear model's weights lie in the row
    space of the training features (representer theorem; Hastie, Tibshirani & Friedman, "The
    Elements of Statistical Learning", 2nd ed., sec. 18.3.5), so the fitted model and its test
    logits are the same while each fold costs O(N^2 D + N^3) once and O(N^2 C) per iteration
    instead of O(N D C).

    Otherwise the samples are copied once, shifted by their mean, in fold order; a fold's
    training rows are the other folds' blocks of that copy, and if ``gram`` is ``"float32"`` or
    ``"float64"`` every fold's Gram matrix comes from one pass over the data: the Gram matrix
    of each fold's block is formed once, a training part's is the total minus its own fold's,
    and centring and scaling are a rank-one correction and a diagonal scaling.

    Parameters
    ----------
    x : ndarray of shape (n_samples, n_features)
    codes : ndarray of shape (n_samples,)
    fold : ndarray of shape (n_samples,)
        Test fold of every sample.
    n_classes : int
    gram : {None, "float32", "float64"}
        Whether (and in which precision) to form the Gram matrices; ``"float64"`` also keeps
        the shifted copy in float64.
    dual : bool, optional
        Force the kernel-eigenbasis path (True) or the feature path (False); default: the
        kernel path exactly when D > N.
    device : str, optional
        A torch device for the training products (the training features are then copied to
        it, one fold at a time).

    Yields
    ------
    FoldProblem
    """
    n, d = x.shape
    if d > n if dual is None else dual:
        yield from _dual_folds(x, codes, fold, n_classes, device)
        return
    n_folds = int(fold.max()) + 1
    order = np.argsort(fold, kind="stable")
    counts = np.bincount(fold, minlength=n_folds)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    shift = x.mean(axis=0, dtype=np.float64)
    dtype = np.float64 if gram == "float64" else np.float32
    xs = np.empty((n, d), dtype=dtype)
    step = max(256, BLOCK_BYTES // (8 * d))
    for s in range(0, n, step):
        xs[s : s + step] = x[order[s : s + step]] - shift
    codes_s = codes[order]
    means = np.zeros((n_folds, d))
    m2 = np.zeros((n_folds, d))  # per fold: sum of squared deviations from the fold's mean
    grams = np.zeros((n_folds, d, d), dtype=dtype) if gram is not None else None
    csums = np.zeros((n_folds, d, n_classes)) if gram is not None else None
    for k in range(n_folds):
        block = xs[bounds[k] : bounds[k + 1]]
        means[k] = block.sum(axis=0, dtype=np.float64) / counts[k]
        for s in range(0, len(block), step):
            dev = block[s : s + step] - means[k]
            m2[k] += np.einsum("ij,ij->j", dev, dev)
        if grams is not None:
            grams[k] = block.T @ block
            csums[k] = class_sums(block, codes_s[bounds[k] : bounds[k + 1]], n_classes).T
    eps = np.finfo(np.float64).eps
    for k in range(n_folds):
        others = np.arange(n_folds) != k
        m = counts[others].sum()
        # pairwise combination of the folds' means and squared deviations (Chan, Golub &
        # LeVeque 1979), stable where E[x^2] - E[x]^2 is not
        delta = counts[others] @ means[others] / m  # training mean of x - shift
        spread = means[others] - delta
        var = (m2[others].sum(axis=0) + counts[others] @ (spread * spread)) / m
        scale = np.sqrt(var)
        # constant columns: scikit-learn's StandardScaler bound, with the magnitude of the
        # numbers actually summed (shifted ones) added to the mean's
        size = np.abs(delta + shift) + np.abs(delta)
        scale[var <= m * eps * var + (m * size * eps) ** 2] = 1.0
        ranges = [(int(bounds[j]), int(bounds[j + 1])) for j in range(n_folds) if j != k]
        train = np.concatenate([order[a:b] for a, b in ranges])
        g = cs = None
        if grams is not None:
            n_per_class = np.bincount(codes[train], minlength=n_classes)
            g = grams[others].sum(axis=0, dtype=np.float64) - m * np.outer(delta, delta)
            g /= np.outer(scale, scale)
            cs = (csums[others].sum(axis=0) - np.outer(delta, n_per_class)) / scale[:, None]
        products = BlockProducts(xs, ranges, delta, scale)
        test_rows = slice(int(bounds[k]), int(bounds[k + 1]))

        def test_features(w, rows=test_rows, products=products):
            u = w * products.inv[:, None]
            return xs[rows] @ u - (products.delta @ u.astype(np.float64)).astype(np.float32)

        def dense(ranges=ranges, delta=delta, scale=scale):
            return np.concatenate([((xs[a:b] - delta) / scale).astype(np.float32)
                                   for a, b in ranges])

        if device is not None:
            products = DenseProducts(dense(), device)
        yield FoldProblem(train=train, test=order[test_rows], products=products, gram=g,
                          class_sums=cs, dual=False, test_features=test_features,
                          dense_train=dense)


def _dual_folds(x, codes, fold, n_classes, device):
    eps = np.finfo(np.float64).eps
    for k in range(int(fold.max()) + 1):
        test = np.flatnonzero(fold == k)
        train = np.flatnonzero(fold != k)
        xt = x[train].astype(np.float64)
        mean = xt.mean(axis=0)
        var = xt.var(axis=0)
        scale = np.sqrt(var)
        m = len(train)
        scale[var <= m * eps * var + (m * mean * eps) ** 2] = 1.0
        xt = (xt - mean) / scale
        xs = (x[test].astype(np.float64) - mean) / scale
        evals, evecs = np.linalg.eigh(xt @ xt.T)
        keep = evals > evals.max() * m * eps * 10
        evals, evecs = evals[keep][::-1], evecs[:, keep][:, ::-1]
        root = np.sqrt(evals)
        ztr = (evecs * root).astype(np.float32)
        zte = ((xs @ xt.T) @ evecs / root).astype(np.float32)
        onehot = np.zeros((m, n_classes))
        onehot[np.arange(m), codes[train]] = 1.0
        yield FoldProblem(train=train, test=test, products=DenseProducts(ztr, device),
                          gram=evals, class_sums=(evecs * root).T @ onehot, dual=True,
                          test_features=lambda w, z=zte: z @ w, dense_train=lambda z=ztr: z)


def preconditioner(gram, n, gamma):
    """Cholesky factor of ``gram / n + gamma I`` (or the square roots of the diagonal when
    ``gram`` is a vector of eigenvalues); ``gamma`` grows tenfold until the factorisation
    succeeds (a float32 Gram matrix of rank-deficient features can be slightly indefinite).

    Parameters
    ----------
    gram : ndarray of shape (p, p) or (p,)
    n : int
        Training samples.
    gamma : float
        Damping (> 0).

    Returns
    -------
    ndarray of shape (p, p) or (p,)
    """
    if gram.ndim == 1:
        return np.sqrt(np.maximum(gram, 0.0) / n + gamma)
    a = gram / n
    for _ in range(12):
        try:
            return np.linalg.cholesky(a + gamma * np.eye(len(a)))
        except np.linalg.LinAlgError:
            gamma *= 10.0
    raise np.linalg.LinAlgError("the feature covariance could not be factorised")


def ridge_weights(gram, class_sums_, alpha):
    """One-vs-rest ridge weights ``(Xs^T Xs + alpha I)^-1 Xs^T Y`` for centred features.

    Parameters
    ----------
    gram : ndarray of shape (p, p) or (p,)
        ``Xs^T Xs`` (a vector when the coordinates are the kernel's eigenbasis).
    class_sums_ : ndarray of shape (p, n_classes)
        ``Xs^T Y`` for the one-hot ``Y``.
    alpha : float
        Ridge strength (> 0).

    Returns
    -------
    ndarray of shape (p, n_classes)
    """
    from scipy.linalg import cho_factor, cho_solve

    if gram.ndim == 1:
        return class_sums_ / (np.maximum(gram, 0.0) + alpha)[:, None]
    return cho_solve(cho_factor(gram + alpha * np.eye(len(gram))), class_sums_)


def logistic_lbfgs_torch(x, codes, n_classes, c, max_iter, device):
    """The plain solver: full-batch torch L-BFGS (strong Wolfe) in float32 from zero.

    Parameters
    ----------
    x : ndarray of shape (n_samples, n_features), float32
        Standardised training features.
    codes : ndarray of shape (n_samples,)
    n_classes : int
    c : float
        Inverse L2 strength (penalty ``||W||^2 / (2 c n)`` on the mean loss).
    max_iter : int
        L-BFGS iterations at most.
    device : str
        Torch device.

    Returns
    -------
    w : ndarray of shape (n_features, n_classes), float32
    b : ndarray of shape (n_classes,), float32
    """
    import torch

    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    yt = torch.as_tensor(codes, device=device)
    w = torch.zeros((x.shape[1], n_classes), dtype=torch.float32, device=device,
                    requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float32, device=device, requires_grad=True)
    penalty = 1.0 / (2.0 * c * len(x))
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, tolerance_grad=1e-6,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + penalty * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().cpu().numpy(), b.detach().cpu().numpy()


def logistic_sklearn(x, codes, fold, *, C=1.0, max_iter=100, tol=1e-4):
    """Cross-validated predictions of scikit-learn itself: ``StandardScaler`` then
    ``LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, tol=tol)`` on each fold's
    training part, in float64 (the reference the faster solvers are measured against).

    Parameters
    ----------
    x : ndarray of shape (n_samples, n_features)
    codes : ndarray of shape (n_samples,)
    fold : ndarray of shape (n_samples,)
        Test fold of every sample.
    C : float
    max_iter : int
    tol : float
        scikit-learn's ``tol`` (lbfgs: the largest gradient entry at convergence).

    Returns
    -------
    ndarray of shape (n_samples,)
        Predicted class codes; a fold that stops at ``max_iter`` warns (ConvergenceWarning).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    pred = np.empty(len(codes), dtype=np.int64)
    for f in range(int(fold.max()) + 1):
        train, test = fold != f, fold == f
        scaler = StandardScaler().fit(np.asarray(x[train], dtype=np.float64))
        model = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, tol=tol)
        model.fit(scaler.transform(np.asarray(x[train], dtype=np.float64)), codes[train])
        pred[test] = model.classes_[model.predict_proba(
            scaler.transform(np.asarray(x[test], dtype=np.float64))).argmax(axis=1)]
    return pred
