"""NLEEP: LEEP with a Gaussian mixture on the features in place of the source classifier.

Li, Jia, Chen, Zhang, Wang, Wei, Zhu, Shi. "Ranking Neural Checkpoints", CVPR 2021. The features
are reduced by PCA to the components that keep ``variance`` (80 %) of the energy, a Gaussian
mixture with ``components_per_class x C`` components is fitted, and its posteriors play the part of
the source-class probabilities theta in LEEP:
``NLEEP = 1/N sum_i log sum_v P(y_i | v) pi(v | x_i)``.

Faithful to the SFDA authors' implementation (TencentARC/SFDA ``NLEEP``, the named reference)
except:
- that code has no seed (it depends on numpy's global random state); here the mixture's k-means
  initialisation is seeded with ``seed`` (``np.random.RandomState(seed)``, which equals the
  reference run under ``np.random.seed(seed)``), so the score is deterministic;
- that code averages P(y_i | x_i) without the logarithm of the paper's Eq. (LEEP); ``log=True``
  (the default) follows the paper, ``log=False`` reproduces the reference's number.

Cost: EM with full covariances costs O(K N d^2) per iteration (K = 5 C components, d PCA
dimensions), which is why the reference takes over 300 s at N = 10^4, D = 10^3, C = 100. Two
bounds keep it to seconds there: ``max_dims`` caps d ("auto": ``K d^2 <= 2e6``, i.e. d <= 200 for
10 classes, d <= 63 for 100) and ``max_fit_samples`` caps the rows the mixture is fitted on (a
class-stratified, seeded subsample; posteriors are still computed for every sample). Neither bound
binds on the reference input (N = 2000, C = 10, d = 114); pass ``None`` for both to run the
uncapped procedure. The paper itself treats the PCA dimension as a free parameter.

D > N (raw inputs, small targets): the PCA is scikit-learn's, which for D > N is a thin SVD of
the centred N x D matrix (LAPACK ``gesdd`` first reduces a wide matrix to N x N by an LQ
factorisation): O(N^2 D), and the mixture then lives in at most N - 1 dimensions, so the cost is
driven by N. (For N >= 10 D it forms the D x D covariance instead, the Gram form.)

The mixture (``covariance_type="full"``) is fitted by a batched EM in torch that reproduces
scikit-learn's ``GaussianMixture`` step for step (the same k-means initialisation, run by
scikit-learn itself, the same M-step with ``reg_covar = 1e-6``, the same stopping rule
``|change of the mean log-likelihood| < 1e-3``, a final E-step), but evaluates every component at
once: ``log w_k + log N(x | mu_k, Sigma_k)`` is linear in the monomials ``(x_a x_b, x_a, 1)``,
so the E-step over a block of rows is one GEMM ``(rows x q) @ (q x K)`` with
``q = d (d + 1) / 2 + d + 1``, and the M-step's sufficient statistics are the transposed
product. Rows are processed in blocks, so memory is O(block x K) whatever N is (the N x K
posterior matrix is never formed; posteriors below 1e-40 are dropped between the two passes
``log=True`` needs, which changes the score by less than N K^2 1e-40 relative).

Precision: everything runs in float64. float32 is not safe here: the expanded quadratic form
cancels, with an absolute error of about ``eps |x|^2 / reg_covar`` in the Mahalanobis distance of
a component whose covariance has shrunk to ``reg_covar`` (a singleton component - every
component at S4, where 5000 components are fitted on 5000 rows - has precision 1e6), i.e. 1 in
float32 and 1e-9 in float64 on the benchmark features (``max |x|^2 ~ 22``). The rule: the torch
EM runs when ``eps_64 max_i |x_i|^2 / reg_covar <= 1e-6`` (a Mahalanobis error below about 1e-6,
posteriors to 5e-7 relative: PCA features with squared norms up to about 4500); beyond that,
and for the other covariance types, scikit-learn's ``GaussianMixture`` fits the mixture (centred
per component; slower: about 100 s at S4). Measured against scikit-learn's fit (same PCA, same
seed): the same score at S1 (0.1259198500846633, log=False, the reference value) and 4e-15
relative apart at S2, 1e-10 at S4 (log=False and log=True), where the fit takes 8 s instead of
60-110 s; ``tests/metrics/test_nleep.py`` compares the fitted mixtures directly.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

from transferscope.errors import InputError, TransferabilityWarning
from transferscope.metrics._registry import metric
from transferscope.metrics.sampling import stratified_subsample

if TYPE_CHECKING:
    import torch

DIMS_BUDGET = 2e6  # bound on K * d^2, the per-sample cost of one EM step with full covariances
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
REG_COVAR = 1e-6  # scikit-learn's default, added to every covariance's diagonal
TOL = 1e-3  # scikit-learn's default: stop when the mean log-likelihood changes by less
RISK_LIMIT = 1e-6  # eps * max |x|^2 / reg_covar above which the torch EM hands over to sklearn
BLOCK_ELEMENTS = 2**22  # elements of one (rows x components) block: 32 MiB in float64
TINY = 1e-40  # posteriors below this are not kept between the two passes of log=True
SPARSE_BUDGET = 2**23  # posteriors kept between the passes (about 130 MB); beyond, recompute
MONOMIAL_CACHE_BYTES = 2**28  # the fit rows' monomials are kept across EM iterations up to this


def _check_options(components_per_class, variance, max_iter, covariance_type) -> None:
    if covariance_type not in COVARIANCE_TYPES:
        raise InputError(
            f"Expected covariance_type one of {', '.join(COVARIANCE_TYPES)}, got "
            f"{covariance_type!r}; 'full' is the paper's choice"
        )
    if not (isinstance(components_per_class, (int, np.integer)) and components_per_class >= 1):
        raise InputError(
            f"Expected components_per_class a positive integer, got {components_per_class!r}; "
            "the paper uses 5"
        )
    if not (isinstance(variance, (float, int)) and 0 < variance <= 1):
        raise InputError(
            f"Expected variance a fraction in (0, 1], got {variance!r}; the paper keeps 0.8"
        )
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise InputError(f"Expected max_iter a positive integer, got {max_iter!r}; e.g. 100")


def _rows_per_block(width: int) -> int:
    return max(1, BLOCK_ELEMENTS // max(1, width))


# -- the torch EM (full covariances) ---------------------------------------------------------
def _monomials(x, iu):
    """Rows ``(x_a x_b for a <= b, x, 1)``: the features a Gaussian log-density is linear in.

    Parameters
    ----------
    x : torch.Tensor of shape (n_rows, d)
    iu : torch.Tensor of shape (2, d (d + 1) / 2)
        Upper-triangle indices.

    Returns
    -------
    torch.Tensor of shape (n_rows, d (d + 1) / 2 + d + 1)
    """
    import torch

    return torch.cat([x[:, iu[0]] * x[:, iu[1]], x, x.new_ones((len(x), 1))], dim=1)


def _log_density_weights(weights, means, prec_chol, iu):
    """Coefficients W (q, K) with ``monomials(x) @ W = log w_k + log N(x | mu_k, Sigma_k)``.

    With the precision ``L_k = P_k P_k^T`` (P_k the precision's Cholesky factor, as
    scikit-learn stores it): ``-1/2 (x - mu)^T L (x - mu) = -1/2 x^T L x + x^T L mu
    - 1/2 |mu P|^2``, plus ``log w_k + log det P_k - d/2 log(2 pi)``.

    Parameters
    ----------
    weights : torch.Tensor of shape (K,)
    means : torch.Tensor of shape (K, d)
    prec_chol : torch.Tensor of shape (K, d, d)
    iu : torch.Tensor of shape (2, d (d + 1) / 2)

    Returns
    -------
    torch.Tensor of shape (d (d + 1) / 2 + d + 1, K)
    """
    import torch

    d = means.shape[1]
    lam = prec_chol @ prec_chol.mT
    quad = lam[:, iu[0], iu[1]] * torch.where(iu[0] == iu[1], -0.5, -1.0).to(lam.dtype)
    linear = torch.einsum("kij,kj->ki", lam, means)
    mp = torch.einsum("kd,kde->ke", means, prec_chol)
    log_det = torch.log(torch.diagonal(prec_chol, dim1=1, dim2=2)).sum(dim=1)
    bias = (torch.log(weights) + log_det - 0.5 * d * math.log(2 * math.pi)
            - 0.5 * (mp * mp).sum(dim=1))
    return torch.cat([quad, linear, bias[:, None]], dim=1).T.contiguous()


def _parameters(stats, n_samples, iu, *, initial):
    """The M-step: weights, means and precision Cholesky factors from the statistics
    ``stats = R^T monomials(X)`` (K, q) of responsibilities R (n, K), as scikit-learn's
    ``_estimate_gaussian_parameters`` (``nk = sum_i r_ik + 10 eps``) and
    ``_compute_precision_cholesky``.

    Parameters
    ----------
    stats : torch.Tensor of shape (K, d (d + 1) / 2 + d + 1)
    n_samples : int
    iu : torch.Tensor of shape (2, d (d + 1) / 2)
    initial : bool
        Weights ``nk / n`` (scikit-learn's initialisation) instead of ``nk / sum(nk)``.

    Returns
    -------
    weights : torch.Tensor of shape (K,)
    means : torch.Tensor of shape (K, d)
    prec_chol : torch.Tensor of shape (K, d, d)
    """
    import torch

    n_mix = stats.shape[0]
    q2 = iu.shape[1]
    d = stats.shape[1] - q2 - 1
    rsum = stats[:, -1]
    nk = rsum + 10 * torch.finfo(stats.dtype).eps
    means = stats[:, q2 : q2 + d] / nk[:, None]
    second = stats.new_zeros((n_mix, d, d))
    second[:, iu[0], iu[1]] = stats[:, :q2]
    second = second + torch.triu(second, 1).mT
    # sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T / nk = S2 / nk - (2 - rsum / nk) mu mu^T
    cov = second / nk[:, None, None] - ((2.0 - rsum / nk)[:, None, None]
                                        * means[:, :, None] * means[:, None, :])
    cov.diagonal(dim1=1, dim2=2).add_(REG_COVAR)
    chol, info = torch.linalg.cholesky_ex(cov)
    if bool(info.any()):
        raise InputError(
            "Expected features a Gaussian mixture can fit, got a component with a covariance "
            "that is not positive definite (collapsed samples); lower components_per_class"
        )
    eye = torch.eye(d, dtype=cov.dtype).expand_as(cov)
    prec_chol = torch.linalg.solve_triangular(chol, eye, upper=False).mT
    weights = nk / (n_samples if initial else nk.sum())
    return weights, means, prec_chol


class FullGaussianMixture:
    """A Gaussian mixture with full covariances, fitted by a batched EM in torch (float64).

    Step for step scikit-learn's ``GaussianMixture(covariance_type="full", n_init=1,
    init_params="kmeans", reg_covar=1e-6, tol=1e-3)``: the initial labels come from
    scikit-learn's ``KMeans`` itself (one thread, same seed), and each EM iteration is a GEMM
    pair over row blocks (see the module docstring).

    Parameters
    ----------
    n_components : int
    seed : int
        Seed of the k-means initialisation (``np.random.RandomState(seed)``).
    max_iter : int
        EM iterations at most.
    """

    def __init__(self, n_components: int, *, seed: int = 0, max_iter: int = 100):
        self.n_components = int(n_components)
        self.seed = seed
        self.max_iter = int(max_iter)

    def fit(self, x: np.ndarray) -> FullGaussianMixture:
        """Fit to ``x`` of shape (n_samples, d), n_samples >= n_components.

        Parameters
        ----------
        x : ndarray of shape (n_samples, d)

        Returns
        -------
        FullGaussianMixture
            Itself, with ``weights_`` (K,), ``means_`` (K, d), ``precisions_cholesky_``
            (K, d, d) as torch tensors, ``n_iter_`` and ``converged_``.
        """
        import torch
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        x_np = np.ascontiguousarray(x, dtype=np.float64)
        n, d = x_np.shape
        k = self.n_components
        # one thread: at K in the thousands, the k-means++ loop is thousands of tiny BLAS
        # calls, which multi-threaded BLAS/OpenMP pools make 4x slower on a busy machine;
        # the labels are the same (checked at S1 and S4)
        with threadpool_limits(limits=1):
            init = KMeans(n_clusters=k, n_init=1,
                          random_state=np.random.RandomState(self.seed)).fit(x_np).labels_
        xt = torch.from_numpy(x_np)
        self._iu = torch.triu_indices(d, d)
        q = self._iu.shape[1] + d + 1
        step = _rows_per_block(max(k, q))
        starts = range(0, n, step)
        # the fit rows' monomials are reused by every iteration when they fit the cache
        cached = ([_monomials(xt[a : a + step], self._iu) for a in starts]
                  if n * q * 8 <= MONOMIAL_CACHE_BYTES else None)

        def monomials(i, start):
            return cached[i] if cached is not None else _monomials(xt[start : start + step],
                                                                    self._iu)

        codes = torch.from_numpy(init.astype(np.int64))
        stats = torch.zeros((k, q), dtype=torch.float64)
        for i, start in enumerate(starts):
            stats.index_add_(0, codes[start : start + step], monomials(i, start))
        params = _parameters(stats, n, self._iu, initial=True)
        lower, self.converged_ = -math.inf, False
        for n_iter in range(1, self.max_iter + 1):
            self.n_iter_ = n_iter
            prev = lower
            w = _log_density_weights(*params, self._iu)
            stats.zero_()
            total = 0.0
            for i, start in enumerate(starts):
                mono = monomials(i, start)
                log_prob = mono @ w
                norm = torch.logsumexp(log_prob, dim=1)
                total += float(norm.sum())
                resp = torch.exp(log_prob.sub_(norm[:, None]))
                stats.addmm_(resp.T, mono)
            lower = total / n
            params = _parameters(stats, n, self._iu, initial=False)
            if abs(lower - prev) < TOL:
                self.converged_ = True
                break
        self.weights_, self.means_, self.precisions_cholesky_ = params
        self._w = _log_density_weights(*params, self._iu)
        return self

    def predict_proba(self, x) -> torch.Tensor:
        """Posteriors of the components for ``x``.

        Parameters
        ----------
        x : ndarray or torch.Tensor of shape (n_rows, d)

        Returns
        -------
        torch.Tensor of shape (n_rows, K), float64
        """
        import torch

        xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        log_prob = _monomials(xt, self._iu) @ self._w
        return torch.softmax(log_prob, dim=1)


# -- LEEP on the posteriors, in row blocks ---------------------------------------------------
def nleep_from_posteriors(posteriors, n_samples, codes, n_classes, n_mix, *, log=True) -> float:
    """LEEP (Nguyen et al., ICML 2020) of the posteriors pi(v | x_i), computed in row blocks.

    ``joint[c, v] = 1/N sum_{i: y_i = c} pi(v | x_i)``, ``P(y | v) = joint / sum_c joint``, and
    the score is the mean of ``log sum_v P(y_i | v) pi(v | x_i)`` (or of the sum itself with
    ``log=False``, which equals ``sum_{c,v} joint[c, v] P(c | v)``: one pass). With ``log=True``
    the posteriors above 1e-40 are kept from the first pass when they fit in ``SPARSE_BUDGET``
    entries; otherwise the second pass recomputes them.

    Parameters
    ----------
    posteriors : callable
        ``posteriors(start, stop)`` returns the (stop - start, K) float64 torch tensor of
        posteriors of rows start..stop.
    n_samples : int
    codes : ndarray of shape (n_samples,)
        Class codes in 0..n_classes-1.
    n_classes, n_mix : int
    log : bool

    Returns
    -------
    float
    """
    import torch

    y = torch.from_numpy(np.asarray(codes, dtype=np.int64))
    joint = torch.zeros((n_classes, n_mix), dtype=torch.float64)
    step = _rows_per_block(n_mix)
    kept, count = ([] if log else None), 0
    for start in range(0, n_samples, step):
        theta = posteriors(start, min(n_samples, start + step))
        joint.index_add_(0, y[start : start + step], theta)
        if kept is not None:
            rows, cols = torch.nonzero(theta > TINY, as_tuple=True)
            count += len(rows)
            if count > SPARSE_BUDGET:
                kept = None  # too dense to keep: the second pass recomputes the posteriors
            else:
                kept.append((rows + start, cols, theta[rows, cols]))
    joint /= n_samples
    marginal = joint.sum(dim=0)
    cond = torch.where(marginal > 0, joint / torch.where(marginal > 0, marginal, 1.0), 0.0)
    if not log:
        return float((joint * cond).sum())
    per_sample = torch.zeros(n_samples, dtype=torch.float64)
    if kept is not None:
        for rows, cols, values in kept:
            per_sample.index_add_(0, rows, values * cond[y[rows], cols])
    else:
        for start in range(0, n_samples, step):
            stop = min(n_samples, start + step)
            theta = posteriors(start, stop)
            per_sample[start:stop] = (theta * cond[y[start:stop]]).sum(dim=1)
    return float(torch.log(per_sample).mean())


@metric(
    "nleep",
    "LEEP on the posteriors of a Gaussian mixture fitted to PCA-reduced features (seeded)",
    stochastic=True,
    min_per_class=2,
    reference="nleep.sfda",
)
def nleep(
    features,
    labels,
    *,
    components_per_class=5,
    variance=0.8,
    seed=0,
    log=True,
    max_dims="auto",
    max_fit_samples=4000,
    covariance_type="full",
    max_iter=100,
):
    """NLEEP (Li et al., CVPR 2021): LEEP on the posteriors of a Gaussian mixture fitted to the
    PCA-reduced features; deterministic for a given ``seed``; higher = better.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Target features from the source model. With n_features > n_samples the PCA is a thin
        SVD of the centred n_samples x n_features matrix (O(N^2 D)) and the mixture lives in at
        most N - 1 dimensions, so the cost is driven by N.
    labels : array-like of shape (n_samples,)
        Class labels, at least 2 samples per class.
    components_per_class : int
        Mixture components per class (K = components_per_class x n_classes).
    variance : float
        Fraction of the variance the PCA keeps.
    seed : int
        Seed of the mixture's k-means initialisation and of the fitting subsample.
    log : bool
        Average log P(y_i | x_i) as the paper does; ``False`` averages P(y_i | x_i) as the
        reference code does.
    max_dims : int, "auto" or None
        Cap on the PCA dimensions ("auto": the largest d with K d^2 <= 2e6, at least 16;
        ``None``: no cap).
    max_fit_samples : int or None
        Fit the mixture on a class-stratified subsample of at most this many rows (posteriors
        are computed for every sample).
    covariance_type : {"full", "tied", "diag", "spherical"}
        The mixture's covariance type; "full" (the paper's) runs the batched torch EM, the
        others scikit-learn's ``GaussianMixture``.
    max_iter : int
        EM iterations at most.

    Returns
    -------
    float
    """
    from sklearn.decomposition import PCA

    _check_options(components_per_class, variance, max_iter, covariance_type)
    x = np.asarray(features, dtype=np.float64)
    n_mix = components_per_class * labels.n_classes
    if len(x) < n_mix:
        raise InputError(
            f"Expected at least {n_mix} samples for NLEEP's {n_mix}-component mixture, got "
            f"{len(x)}; lower components_per_class"
        )
    reduced = PCA(n_components=variance).fit_transform(x)
    if max_dims == "auto":
        max_dims = max(16, int(np.sqrt(DIMS_BUDGET / n_mix)))
    if max_dims is not None and reduced.shape[1] > max_dims:
        reduced = reduced[:, :max_dims]
    reduced = np.ascontiguousarray(reduced)
    fit_rows = reduced
    if max_fit_samples is not None and len(reduced) > max_fit_samples:
        idx = stratified_subsample(labels.codes, max(max_fit_samples, n_mix), seed)
        fit_rows = reduced[idx]
    risk = np.finfo(np.float64).eps * float(np.einsum("ij,ij->i", reduced, reduced).max())
    if covariance_type == "full" and risk / REG_COVAR <= RISK_LIMIT:
        mixture = FullGaussianMixture(n_mix, seed=seed, max_iter=max_iter).fit(fit_rows)
        if not mixture.converged_:
            warnings.warn(
                f"nleep: the Gaussian mixture did not converge in {max_iter} EM iterations; "
                "raise max_iter", TransferabilityWarning, stacklevel=3)

        def posteriors(start, stop):
            return mixture.predict_proba(reduced[start:stop])
    else:
        posteriors = _sklearn_mixture(fit_rows, reduced, n_mix, covariance_type, max_iter, seed)
    return nleep_from_posteriors(posteriors, len(reduced), labels.codes, labels.n_classes,
                                 n_mix, log=log)


def _sklearn_mixture(fit_rows, reduced, n_mix, covariance_type, max_iter, seed):
    """scikit-learn's ``GaussianMixture``, fitted; returns ``posteriors(start, stop)``."""
    import torch
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(
        n_components=n_mix,
        covariance_type=covariance_type,
        max_iter=max_iter,
        random_state=np.random.RandomState(seed),
    ).fit(fit_rows)

    def posteriors(start, stop):
        return torch.from_numpy(gmm.predict_proba(reduced[start:stop]))

    return posteriors
