"""The width transform: scores that do not reward feature width."""

import numpy as np
import pytest

from transferscope.errors import InputError
from transferscope.metrics import score
from transferscope.metrics.width import DEFAULT_WIDTH, check_width, equalize_width


def test_check_width_canonical_forms_and_errors():
    assert check_width("none") == "none"
    assert check_width("PCA") == "pca:32" == DEFAULT_WIDTH
    assert check_width("pca:8") == "pca:8"
    assert check_width("standardize") == "standardize"
    for bad in ("pca:0", "pca:x", "whiten", "none:3", ""):
        with pytest.raises(InputError, match="width setting|pca:K"):
            check_width(bad)


def test_pca_keeps_the_top_components_deterministically():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 6)) @ rng.standard_normal((6, 30)) + 4.0  # rank 6, wide
    z = equalize_width(x, "pca:4")
    assert z.shape == (50, 4)
    var = z.var(axis=0)
    assert np.all(np.diff(var) <= 1e-9)  # ordered by variance
    # the top-4 principal subspace: what an SVD of the centred data gives
    xc = x - x.mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    np.testing.assert_allclose(np.abs(z), np.abs(u[:, :4] * s[:4]), atol=1e-8)
    np.testing.assert_array_equal(z, equalize_width(x[:, ::-1].copy()[:, ::-1], "pca:4"))
    # Gram (n < d) and covariance (n >= d) routes agree up to sign, and signs are fixed
    tall = equalize_width(x[:, :5], "pca:3")
    np.testing.assert_allclose(np.abs(tall), np.abs(
        np.linalg.svd(x[:, :5] - x[:, :5].mean(0), full_matrices=False)[0][:, :3]
        * np.linalg.svd(x[:, :5] - x[:, :5].mean(0), full_matrices=False)[1][:3]), atol=1e-8)
    # fewer dimensions than K: a rotation, so distances are kept
    r = equalize_width(x[:, :5], "pca:64")
    assert r.shape == (50, 5)
    d0 = np.linalg.norm(x[:, None, :5] - x[None, :, :5], axis=-1)
    np.testing.assert_allclose(np.linalg.norm(r[:, None] - r[None], axis=-1), d0, atol=1e-8)
    assert equalize_width(x[:3], "pca:64").shape == (3, 2)  # at most n - 1 components


def test_standardize_gives_unit_variance_and_drops_constant_dimensions():
    rng = np.random.default_rng(1)
    x = np.c_[rng.standard_normal((40, 3)) * [1.0, 10.0, 0.1], np.full(40, 7.0)]
    z = equalize_width(x, "standardize")
    assert z.shape == (40, 3)
    np.testing.assert_allclose(z.std(axis=0), 1.0)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    assert equalize_width(x, "none") is x


@pytest.mark.parametrize("metric", ["hscore", "gbc", "sfda"])
def test_wide_noise_outranks_a_narrow_signal_unless_widths_are_equalised(metric):
    """256 dimensions of pure noise score above 8 informative dimensions on metrics built
    from class statistics in the whole feature space; scored in the same 16 principal
    components, the informative features rank first."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 60)
    signal = np.eye(5)[y] @ rng.standard_normal((5, 8)) * 0.7 + rng.standard_normal((300, 8))
    noise = rng.standard_normal((300, 256))
    assert score(metric, noise, y) > score(metric, signal, y)
    assert (score(metric, equalize_width(signal, "pca:16"), y)
            > score(metric, equalize_width(noise, "pca:16"), y))


def test_rank_scores_every_model_after_the_same_transform():
    from transferscope.data import Dataset
    from transferscope.rank import rank

    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 30)
    x = np.eye(3)[y] @ rng.standard_normal((3, 20)) + rng.standard_normal((90, 20))
    data = Dataset(inputs=x.astype(np.float32), labels=y, kind="array", name="t")
    plain = rank(data, ["raw"], metrics=("hscore",), subsamples=0)
    reduced = rank(data, ["raw"], metrics=("hscore",), subsamples=0, width="pca:4")
    assert plain.rows[0]["dim"] == reduced.rows[0]["dim"] == 20
    want = score("hscore", equalize_width(x.astype(np.float32), "pca:4"), y)
    assert reduced.rows[0]["hscore"] == pytest.approx(want)
    assert plain.rows[0]["hscore"] != pytest.approx(want)
    with pytest.raises(InputError, match="width setting"):
        rank(data, ["raw"], metrics=("hscore",), subsamples=0, width="tsne")
