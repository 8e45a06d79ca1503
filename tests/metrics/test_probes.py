"""knn and linear_probe against independent oracles (scikit-learn on the same folds), and the
choices their solvers make: exact neighbours from float32 tiles, the D > N (kernel) paths,
memory-bounded blocking, determinism under a seed."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.neighbors import NearestNeighbors

from tests.conftest import blobs
from transferscope.errors import InputError, TransferabilityWarning
from transferscope.metrics import _probe_solvers as ps
from transferscope.metrics import score


def standardised_folds(x, y, folds=5, seed=0):
    """(train, test, x_train, x_test) per fold, standardised like StandardScaler."""
    fold = ps.fold_ids(y, folds, seed)
    for k in range(folds):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        std[std == 0] = 1.0
        yield train, test, (x[train] - mean) / std, (x[test] - mean) / std


def sklearn_cv_accuracy(x, y, model):
    correct = 0
    for train, test, xtr, xte in standardised_folds(x, y):
        correct += int((model.fit(xtr, y[train]).predict(xte) == y[test]).sum())
    return correct / len(y)


def digits(n=500):
    x, y = load_digits(return_X_y=True)
    return x[:n], y[:n]


def wide(n=120, d=400, seed=0):
    """D > N: digits pixels through a random projection, plus noise."""
    x, y = digits(n)
    rng = np.random.default_rng(seed)
    return x @ rng.standard_normal((64, d)) / 8 + rng.standard_normal((n, d)), y


LOGISTIC = LogisticRegression(C=1.0, max_iter=1000, tol=1e-6)


@pytest.mark.parametrize("make", [lambda: blobs(300, 20, 4, 1.5, 0), lambda: digits(500),
                                  lambda: wide(120, 400)],
                         ids=["blobs", "digits", "wide"])
def test_linear_probe_matches_sklearn_logistic_on_the_same_folds(make):
    x, y = make()
    ours = score("linear_probe", x, y)
    assert ours == pytest.approx(sklearn_cv_accuracy(x, y, LOGISTIC), abs=0.005)


def test_ridge_solver_is_sklearn_ridge_classifier():
    x, y = digits(400)
    for c in (0.01, 1.0):
        ours = score("linear_probe", x, y, solver="ridge", C=c)
        assert ours == sklearn_cv_accuracy(x, y, RidgeClassifier(alpha=1.0 / c))


def test_sklearn_solver_is_sklearn_itself_on_the_same_folds():
    x, y = digits(300)
    model = LogisticRegression(C=0.5, max_iter=300, tol=1e-5)
    assert score("linear_probe", x, y, solver="sklearn", C=0.5, max_iter=300, tol=1e-5) == (
        sklearn_cv_accuracy(x, y, model))


def test_tighter_tol_moves_the_whitened_probe_toward_the_converged_fit():
    x, y = digits(500)
    fold = ps.fold_ids(y, 5, 0)
    from transferscope.metrics.probes import linear_probe_predictions

    loose, tight = {}, {}
    linear_probe_predictions(x, y, 10, fold, tol=1e-2, info=loose)
    linear_probe_predictions(x, y, 10, fold, tol=1e-7, info=tight)
    assert sum(loose["iterations"]) < sum(tight["iterations"])


def test_earlier_lbfgs_solver_is_kept():
    x, y = blobs(150, 6, 3, 1.5, 1)
    assert score("linear_probe", x, y, solver="lbfgs") == pytest.approx(
        sklearn_cv_accuracy(x, y, LOGISTIC), abs=0.02)


def test_unconverged_probe_warns():
    x, y = digits(300)
    with pytest.warns(TransferabilityWarning, match="max_iter=2"):
        score("linear_probe", x, y, max_iter=2)


def test_linear_probe_is_deterministic_under_a_seed():
    x, y = blobs(200, 12, 3, 1.0, 2)
    assert score("linear_probe", x, y, seed=4) == score("linear_probe", x, y, seed=4)
    assert score("linear_probe", x, y, seed=4, solver="ridge") == score(
        "linear_probe", x, y, seed=4, solver="ridge")


def primal_and_dual(x, y, solver):
    """Test logits of every fold from the kernel-eigenbasis path and from the primal path."""
    fold = ps.fold_ids(y, 5, 0)
    out = []
    for dual in (True, False):
        logits = np.zeros((len(y), y.max() + 1))
        for prob in ps.probe_folds(x, y, fold, y.max() + 1, gram="float64", dual=dual):
            n = len(prob.train)
            if solver == "ridge":
                w = ps.ridge_weights(prob.gram, prob.class_sums, 1.0)
                b = np.zeros(w.shape[1])
            else:
                lam = 1.0 / n
                factor = ps.preconditioner(prob.gram, n, 3 * lam)
                w, b, _, _ = ps.logistic_lbfgs_whitened(prob.products, y[prob.train], 3, lam,
                                                     factor, prob.class_sums, max_iter=500,
                                                     tol=1e-7)
            logits[prob.test] = prob.test_logits(w, b)
        out.append(logits)
    return out


@pytest.mark.parametrize("solver", ["ridge", "whitened"])
def test_dual_path_equals_primal_path(solver):
    x, y = blobs(60, 150, 3, 1.0, 3)  # D > N, small enough for both
    dual, primal = primal_and_dual(x, y, solver)
    assert np.allclose(dual, primal, rtol=1e-3, atol=1e-3 * np.abs(primal).max())
    assert (dual.argmax(axis=1) == primal.argmax(axis=1)).all()


def brute_neighbours(x, fold, k):
    """Oracle: scikit-learn's brute-force nearest neighbours among the other folds."""
    out = np.empty((len(x), k), dtype=np.int64)
    for f in np.unique(fold):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(x[train])
        out[test] = train[nn.kneighbors(x[test], return_distance=False)]
    return out


@pytest.mark.parametrize("shape", [(400, 30), (150, 600)], ids=["primal", "gram"])
def test_knn_neighbours_are_the_brute_force_ones(shape):
    n, d = shape
    x, y = blobs(n, d, 4, 1.0, 5)
    fold = ps.fold_ids(y, 5, 0)
    assert (ps.knn_neighbours(x, fold, 7) == brute_neighbours(x, fold, 7)).all()


def test_knn_accuracy_is_sklearn_knn_classifier():
    from sklearn.neighbors import KNeighborsClassifier

    x, y = blobs(300, 8, 3, 2.0, 6)
    fold = ps.fold_ids(y, 5, 0)
    expected = 0
    for f in range(5):
        train, test = fold != f, fold == f
        model = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(x[train], y[train])
        expected += int((model.predict(x[test]) == y[test]).sum())
    assert score("knn", x, y, n_neighbors=1) == expected / len(y)


def test_knn_exact_ties_go_to_the_lower_index_in_every_path(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(200, 6)).astype(np.float64)  # many exactly equal distances
    fold = ps.fold_ids(np.arange(200) % 2, 5, 0)
    dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    expected = np.empty((200, 5), dtype=np.int64)
    for i in range(200):
        train = np.flatnonzero(fold != fold[i])
        expected[i] = train[np.lexsort((train, dist[i, train]))[:5]]
    assert (ps.knn_neighbours(x, fold, 5, block_rows=16) == expected).all()
    wide_x = np.hstack([x, np.zeros((200, 300))])  # D > N: the Gram path
    assert (ps.knn_neighbours(wide_x, fold, 5) == expected).all()


def test_knn_blocking_bounds_memory_not_the_result(monkeypatch):
    x, y = blobs(500, 20, 5, 1.0, 7)
    fold = ps.fold_ids(y, 5, 0)
    reference = ps.knn_neighbours(x, fold, 5)
    assert (ps.knn_neighbours(x, fold, 5, block_rows=13) == reference).all()
    assert score("knn", x, y, block_rows=13) == score("knn", x, y)
    wide_x, wide_y = wide(100, 300)
    wide_fold = ps.fold_ids(wide_y, 5, 0)
    gram_path = ps.knn_neighbours(wide_x, wide_fold, 5)
    monkeypatch.setattr(ps, "GRAM_BYTES", 0)  # force the tiled path on D > N
    assert (ps.knn_neighbours(wide_x, wide_fold, 5, block_rows=9) == gram_path).all()


def test_knn_float32_features_and_cosine():
    x, y = blobs(300, 16, 3, 1.5, 8)
    assert score("knn", x.astype(np.float32), y) == pytest.approx(score("knn", x, y))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert score("knn", x, y, metric="cosine") == score("knn", unit, y)


@pytest.mark.parametrize("metric_name,options,needle", [
    ("linear_probe", {"solver": "newton"}, "solver"),
    ("linear_probe", {"max_iter": 0}, "max_iter"),
    ("linear_probe", {"tol": 0}, "tol > 0"),
    ("linear_probe", {"C": 0}, "C > 0"),
    ("knn", {"block_rows": 0}, "block_rows"),
    ("knn", {"n_neighbors": 0}, "n_neighbors"),
])
def test_bad_options_are_one_line_input_errors(metric_name, options, needle):
    x, y = blobs(60, 4, 3, 1.0, 0)
    with pytest.raises(InputError, match=needle) as err:
        score(metric_name, x, y, **options)
    assert "\n" not in str(err.value)
