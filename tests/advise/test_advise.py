"""The advisor: features, fit, JSON, leave-one-target-out evaluation, advise and its CLI."""

import json
import re

import numpy as np
import pytest

from transferscope.advise.evaluation import calibration, ece_consistency, evaluate_advice
from transferscope.advise.features import FEATURES, candidate_features
from transferscope.advise.model import examples, fit_advisor, load_advisor, loto_predictions
from transferscope.advise.records import records_from_pairs
from transferscope.errors import InputError


def _synthetic(n_targets=8, n_sources=5, seed=0, hard_helps=0.0):
    """Benchmark records where the truth follows the probe: fine-tuned accuracy rises with
    the linear probe's margin over the random twin, a negative margin means negative
    transfer, and the linear probe wins on few samples per class, full fine-tuning on many.
    ``hard_helps``: the gain over scratch also grows by that much per point of the target's
    difficulty (a lower base accuracy)."""
    rng = np.random.default_rng(seed)
    rows, sizes = [], {}
    for t in range(n_targets):
        base = rng.uniform(0.5, 0.8)
        for s in range(n_sources):
            margin = rng.uniform(-0.2, 0.3)
            lp = base + margin
            scores = {"linear_probe": lp, "knn": lp - 0.05 + rng.normal(0, 0.02),
                      "logme": margin * 3 + rng.normal(0, 0.3),
                      "hscore_reg": rng.normal(), "sfda": rng.normal(), "nleep": rng.normal()}
            for frac, per_class in ((0.1, 8.0), (1.0, 80.0)):
                sizes[(f"t{t}", frac)] = {"per_class": per_class, "classes": 5}
                scratch = base + (0.02 if frac == 1.0 else -0.05)
                hard = hard_helps * (0.65 - base)
                gain_full = 0.6 * margin + hard + (0.04 if frac == 1.0 else -0.04)
                gain_lp = 0.6 * margin + hard + (-0.03 if frac == 1.0 else 0.03)
                for strategy, gain in (("linear_probe", gain_lp), ("full", gain_full)):
                    g = gain + rng.normal(0, 0.01)
                    row = {"target": f"t{t}", "source": f"s{s}", "strategy": strategy,
                           "fraction": frac, "seeds": 3, "scratch_acc": scratch,
                           "transfer_acc": scratch + g, "gain": g, "gain_lo": g - 0.03,
                           "gain_hi": g + 0.03, "mde": 0.04, "reading": "effect",
                           "verdict": ("NEGATIVE" if g + 0.03 < 0 else "POSITIVE"
                                       if g - 0.03 > 0 else "INCONCLUSIVE"),
                           "dim": 64, "risk": "RISK",
                           "scratch_best_s": 10.0, "transfer_best_s": 10.0 / (1 + max(g, 0))}
                    for m, v in scores.items():
                        row[m] = v
                        row[f"{m}_random"] = v - margin if m in ("linear_probe", "knn") else 0.0
                        row[f"{m}_raw"] = base - 0.1 if m in ("linear_probe", "knn") else 0.0
                    rows.append(row)
    metrics = ["linear_probe", "knn", "logme", "hscore_reg", "sfda", "nleep"]
    return records_from_pairs(rows, metrics, ["linear_probe", "full"], sizes, "image")


def test_records_group_pairs_and_pick_the_best_strategy():
    recs = _synthetic(n_targets=2, n_sources=2)
    assert len(recs) == 4 and set(recs[0]["truth"]) == {"0.1", "1.0"}
    for rec in recs:
        for size in rec["truth"].values():
            arms = size["strategies"]
            assert size["best_acc"] == max(a["transfer_acc"] for a in arms.values())
            assert arms[size["best_strategy"]]["transfer_acc"] == size["best_acc"]
            assert size["beats_scratch"] == (arms[size["best_strategy"]]["gain"] > 0)
            assert size["complete"] and size["per_class"] in (8.0, 80.0)


def test_features_rank_candidates_within_a_target():
    cands = [{"scores": {"linear_probe": {"value": 0.8, "random": 0.5, "raw": 0.6},
                         "logme": {"value": v, "random": 0.0, "raw": 1.0}}, "dim": 64}
             for v in (1.0, 3.0, 2.0)]
    x = candidate_features(cands, per_class=20, classes=4)
    col = {f: i for i, f in enumerate(FEATURES)}
    assert x.shape == (3, len(FEATURES))
    np.testing.assert_allclose(x[:, col["logme_rank"]], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(x[:, col["linear_probe_vs_random"]], 0.3)
    np.testing.assert_allclose(x[:, col["linear_probe_random"]], 0.5)  # how hard, untrained
    np.testing.assert_allclose(x[:, col["linear_probe_vs_raw"]], 0.2)
    np.testing.assert_allclose(x[:, col["log_per_class"]], np.log(20))
    assert np.isnan(x[:, col["sfda_rank"]]).all()  # not scored: NaN, filled by the predictor
    assert (x[:, col["logme_above_random"]] == 1).all()
    # tied scores (e.g. a shrinkage H-score of exactly 0) share their mean rank, so the
    # order the models were given in changes nothing
    tied = [{"scores": {"logme": {"value": v}}, "dim": 8} for v in (0.0, 2.0, 0.0, 1.0)]
    ranks = candidate_features(tied, per_class=20, classes=4)[:, col["logme_rank"]]
    np.testing.assert_allclose(ranks, [0.5 / 3, 1.0, 0.5 / 3, 2 / 3])
    back = candidate_features(tied[::-1], per_class=20, classes=4)[:, col["logme_rank"]]
    np.testing.assert_allclose(back, ranks[::-1])


def test_the_advisor_learns_the_truth_held_out_target_by_target():
    recs = _synthetic()
    res = evaluate_advice(recs)
    adv = next(r for r in res["rows"] if r["predictor"] == "advisor")
    noise = next(r for r in res["rows"] if r["predictor"] == "sfda")  # unrelated to truth
    assert res["targets"] == 8 and adv["cells"] == 16 and adv["examples"] == 80
    assert adv["tau"] > 0.6 and adv["tau"] > noise["tau"] + 0.3
    assert adv["regret"] < noise["regret"]
    assert adv["f1"] > 0.7 and adv["ece"] < 0.2 and adv["brier"] < 0.2
    # the strategy depends on the data size, so neither constant can be right everywhere
    assert adv["strategy_acc"] > max(adv["always_lp_acc"], adv["always_full_acc"])
    # and it loses less accuracy to the best strategy than either constant
    assert 0 <= adv["strategy_regret"] < min(adv["always_lp_regret"], adv["always_full_regret"])
    assert adv["strategy_regret_vs_full"] == pytest.approx(
        adv["strategy_regret"] - adv["always_full_regret"])  # both measured everywhere here
    assert adv["strategy_regret_vs_full_lo"] <= adv["strategy_regret_vs_full"] \
        <= adv["strategy_regret_vs_full_hi"] < 0
    # the rule's quadrants: a similar source gets the linear probe when small (measured) and
    # LP-FT when large (not measured), a different one freeze (not measured) or full: each
    # source counts at one of its two sizes
    assert adv["rule_examples"] == 40 and 0 <= adv["rule_acc"] <= 1
    assert adv["tau_lo"] <= adv["tau"] <= adv["tau_hi"]
    for key in ("brier", "strategy_acc", "strategy_vs_lp", "strategy_vs_full"):
        assert adv[f"{key}_lo"] <= adv[key] <= adv[f"{key}_hi"], key
    assert adv["strategy_vs_lp"] == pytest.approx(adv["strategy_acc"] - adv["always_lp_acc"])
    assert 0 <= adv["ece_lo"] < adv["ece_hi"] <= 1
    assert 0 < adv["ece_calibrated"] <= adv["ece_calibrated_95"] < 1 and 0 < adv["ece_p"] <= 1
    # P(negative) is judged too: its Brier score is the held-out predictions' own, and on
    # this learnable truth it beats always answering the negative share
    pred = loto_predictions(recs)
    neg = pred["examples"].negative.astype(float)
    assert adv["brier_negative"] == pytest.approx(np.mean((pred["p_negative"] - neg) ** 2))
    assert adv["negative_rate"] == pytest.approx(neg.mean())
    assert adv["mean_p_negative"] == pytest.approx(pred["p_negative"].mean())
    assert adv["brier_negative"] < neg.mean() * (1 - neg.mean())
    assert adv["brier_negative_lo"] <= adv["brier_negative"] <= adv["brier_negative_hi"]


def test_target_intervals_resample_whole_targets():
    from transferscope.advise.evaluation import target_interval
    from transferscope.verdict import bootstrap_interval

    groups = np.repeat(np.arange(6), [1, 2, 3, 4, 5, 30])
    v = groups.astype(float)  # each target's examples share one value
    lo, hi = target_interval(lambda i: v[i].mean(), groups, seed=0)
    # whole targets are drawn (a draw without the big target, 30 of the 45 examples, has a
    # mean near 2): far wider than a bootstrap of the 45 examples, which treats them as
    # independent
    ex_lo, ex_hi, _ = bootstrap_interval(lambda i: v[i].mean(), len(v), 0)
    assert lo < 2.5 < ex_lo < v.mean() < ex_hi < hi <= 5.0
    same = np.ones(len(groups))
    assert target_interval(lambda i: same[i].mean(), groups) == (1.0, 1.0)
    few = np.repeat(np.arange(4), 3)
    assert all(np.isnan(target_interval(lambda i: 0.0, few)))


def test_p_negative_and_p_beats_are_one_ordinal_model_and_coherent_everywhere():
    # a NEGATIVE verdict is one way of not beating scratch: one score and two cut points,
    # so P(negative) + P(beats) < 1 on every input, also far outside the training data
    adv = fit_advisor(_synthetic())
    np.testing.assert_array_equal(adv.negative["coef"], -np.asarray(adv.beats["coef"]))
    assert adv.negative["intercept"] < -adv.beats["intercept"]  # c1 < c2
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (200, len(FEATURES))) * 3 + np.asarray(adv.mean)
    p = adv.predict(x)
    raw = 1 / (1 + np.exp(-(adv._z(x)[0] @ np.asarray(adv.negative["coef"])
                            + adv.negative["intercept"])))
    np.testing.assert_allclose(p["p_negative"], raw, rtol=1e-9, atol=1e-15)  # no cap needed
    assert (p["p_negative"] + p["p_beats"] <= 1 + 1e-15).all()
    np.testing.assert_array_equal(p["flag_negative"],
                                  p["p_negative"] >= adv.negative["threshold"])


def test_without_a_negative_example_two_logistic_models_are_fitted_and_capped():
    from transferscope.advise.model import coherent_negative

    recs = _synthetic()
    for rec in recs:
        for size in rec["truth"].values():
            if size["verdict"] == "NEGATIVE":
                size["verdict"] = "INCONCLUSIVE"
    adv = fit_advisor(recs)
    assert not np.any(adv.negative["coef"]) and adv.negative["threshold"] == 0.5
    assert np.any(adv.beats["coef"])
    # the cap of a separately fitted pair: P(beats) 0.6 leaves P(negative) at most 0.4
    np.testing.assert_allclose(coherent_negative([0.9, 0.1], [0.6, 0.6]), [0.4, 0.1])


def _ordinal_nll(t, z, level, c):
    """The proportional-odds objective written out from its probabilities (no gradient)."""
    d = z.shape[1]
    w, c1, c2 = t[:d], t[d], t[d] + np.exp(t[d + 1])
    s = z @ w
    cdf = [1 / (1 + np.exp(-(c1 - s))), 1 / (1 + np.exp(-(c2 - s)))]
    p = np.choose(level, [cdf[0], cdf[1] - cdf[0], 1 - cdf[1]])
    return -np.log(p).sum() + 0.5 / c * np.sum(w * w)


def test_ordinal_regression_is_the_penalised_maximum_likelihood():
    from scipy.optimize import check_grad, minimize

    from transferscope.advise.model import _ordinal, _ordinal_loss

    rng = np.random.default_rng(0)
    z = rng.standard_normal((300, 3))
    latent = z @ [1.0, -0.5, 0.0] + rng.logistic(size=300)
    level = np.digitize(latent, [-1.0, 0.8])
    # its analytic gradient is the objective's
    for _ in range(3):
        t = rng.normal(size=5)
        assert check_grad(lambda t: _ordinal_loss(t, z, level, np.full(3, 2.0))[0],
                          lambda t: _ordinal_loss(t, z, level, np.full(3, 2.0))[1],
                          t) < 1e-4
    # its optimum is the one a derivative-free search finds on the objective written apart
    w, c1, c2 = _ordinal(z, level, 0.5)
    ref = minimize(_ordinal_nll, np.zeros(5), args=(z, level, 0.5), method="Nelder-Mead",
                   options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 40000,
                            "maxfev": 40000}).x
    np.testing.assert_allclose(np.r_[w, c1, c2], np.r_[ref[:4], ref[3] + np.exp(ref[4])],
                               atol=1e-4)
    # without features, the cut points are the log-odds of the cumulative shares
    _, c1, c2 = _ordinal(np.zeros((300, 1)), level, 1.0)
    shares = np.array([(level <= 0).mean(), (level <= 1).mean()])
    np.testing.assert_allclose([c1, c2], np.log(shares / (1 - shares)), atol=1e-6)
    # with many examples and a weak penalty it recovers the generating model
    z = rng.standard_normal((20000, 3))
    level = np.digitize(z @ [1.0, -0.5, 0.0] + rng.logistic(size=20000), [-1.0, 0.8])
    w, c1, c2 = _ordinal(z, level, 1e6)
    np.testing.assert_allclose(np.r_[w, c1, c2], [1.0, -0.5, 0.0, -1.0, 0.8], atol=0.06)
    # a sign the data contradict pins that coefficient at 0
    w, _, _ = _ordinal(z, level, 1e6, np.array([0.0, 1.0, 0.0]))
    assert w[1] == 0.0 and w[0] > 0.5


def test_data_and_time_saved_follow_the_scratch_curve():
    from transferscope.advise.model import _log_data_x

    recs = _synthetic()
    rec = recs[0]
    small, large = rec["truth"]["0.1"], rec["truth"]["1.0"]
    # scratch gains 0.07 from 8 to 80 per class: slope 0.07 / ln 10 per e-fold of data
    slope = (large["scratch_acc"] - small["scratch_acc"]) / np.log(10)
    want = (small["best_acc"] - small["scratch_acc"]) / slope
    assert _log_data_x(rec, small) == pytest.approx(want)
    one_size = {**rec, "truth": {"0.1": small}}
    assert np.isnan(_log_data_x(one_size, small))  # one size: no scratch curve
    ex = examples(recs)
    pred = loto_predictions(recs)
    for name in ("data_x", "time_x"):
        y, p = ex.extras[name], pred[f"log_{name}"]
        assert np.isfinite(y).all() and np.isfinite(p).all()
        assert np.corrcoef(y, p)[0, 1] > 0.5, name  # held out, still follows the truth
    adv = fit_advisor(recs)
    out = adv.predict(ex.X[:3])
    for name in ("data_x", "time_x"):
        assert adv.extras[name]["halfwidth"] > 0
        assert (out[name + "_lo"] < out[name]).all() and (out[name] < out[name + "_hi"]).all()
    # records without the times: no time model, the data model still fits
    for r in recs:
        for size in r["truth"].values():
            size.pop("scratch_best_s", None)
    assert set(fit_advisor(recs, halfwidth=0.1).extras) == {"data_x"}


def test_accuracy_is_a_cell_level_plus_a_place_within_it():
    from transferscope.advise.model import C_GRID

    recs = _synthetic()
    adv = fit_advisor(recs, halfwidth=0.1)
    ex = examples(recs)
    a, b = np.flatnonzero(ex.cells == 0), np.flatnonzero(ex.cells == 1)
    both = adv.predict(ex.X[np.r_[a, b]], ex.cells[np.r_[a, b]])["acc"]
    np.testing.assert_allclose(both, np.r_[adv.predict(ex.X[a])["acc"],
                                           adv.predict(ex.X[b])["acc"]])
    # shifting every candidate of a cell alike moves the level, not the order
    x = ex.X[a].copy()
    x[:, FEATURES.index("linear_probe_random")] += 0.2
    p0, p1 = adv.predict(ex.X[a])["acc"], adv.predict(x)["acc"]
    assert (np.argsort(p0) == np.argsort(p1)).all() and not np.allclose(p0, p1)
    # penalties and the negative-transfer threshold are chosen on the training targets
    assert adv.trained_on["c_beats"] in C_GRID and adv.trained_on["c_negative"] in C_GRID
    assert 0 < adv.negative["threshold"] <= 1
    flags = adv.predict(ex.X)["flag_negative"]
    assert flags.dtype == bool and flags.any() and ex.negative.any()


def test_loto_never_sees_the_held_out_target():
    recs = _synthetic(n_targets=4)
    a = loto_predictions(recs)
    # corrupt one target's truth: its own held-out predictions must not move
    bad = json.loads(json.dumps(recs))
    for rec in bad:
        if rec["target"] == "t0":
            for size in rec["truth"].values():
                size["best_acc"] = 0.0
    b = loto_predictions(bad)
    t0 = [i for i, k in enumerate(a["examples"].keys) if k[0] == "t0"]
    np.testing.assert_allclose(a["acc"][t0], b["acc"][t0])
    others = [i for i, k in enumerate(a["examples"].keys) if k[0] != "t0"]
    assert not np.allclose(a["acc"][others], b["acc"][others])


def test_fit_json_round_trip_and_refusals(tmp_path):
    recs = _synthetic(n_targets=4)
    adv = fit_advisor(recs, source="synthetic")
    path = adv.to_json(tmp_path / "a.json")
    again = load_advisor(path)
    x = examples(recs).X
    for k in ("acc", "p_beats"):
        np.testing.assert_allclose(adv.predict(x)[k], again.predict(x)[k])
    assert adv.trained_on["examples"] == 40 and adv.trained_on["targets"] == 4
    assert adv.accuracy["halfwidth"] > 0
    with pytest.raises(InputError, match="at least 4 finished"):
        fit_advisor(recs[:1])
    data = json.loads(path.read_text())
    data["features"] = data["features"][:-1]
    (tmp_path / "b.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="this version's features"):
        load_advisor(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("{")
    with pytest.raises(InputError, match="Expected an advisor JSON"):
        load_advisor(tmp_path / "c.json")


def test_a_better_probe_never_lowers_p_beats_scratch():
    """The candidate's own probe accuracies enter only through its margins over the twin and
    the raw input, whose coefficients keep their sign: with the twin and the raw input fixed,
    a higher accuracy never lowers P(beats scratch) nor raises P(negative)."""
    # on these targets a hard one (low accuracies, the twin's included) gains more from
    # transfer, which a free coefficient on the candidate's own accuracy would learn as "a
    # lower probe accuracy, a better chance": not so here
    adv = fit_advisor(_synthetic(n_targets=10, hard_helps=1.5), halfwidth=0.1)
    for metric in ("linear_probe", "knn"):
        cands = [{"scores": {"linear_probe": {"value": 0.6, "random": 0.55, "raw": 0.5},
                             "knn": {"value": 0.55, "random": 0.5, "raw": 0.5}}, "dim": 64}
                 for _ in range(9)]
        for i, c in enumerate(cands):
            c["scores"][metric]["value"] = 0.3 + 0.08 * i
        p = adv.predict(candidate_features(cands, per_class=20, classes=5))
        assert (np.diff(p["p_beats"]) >= -1e-12).all(), metric
        assert (np.diff(p["p_negative"]) <= 1e-12).all(), metric
    assert np.ptp(p["p_beats"]) > 0  # and it does move with it


def test_sizes_outside_the_training_range_are_read_at_its_edge(tmp_path):
    recs = _synthetic(n_targets=4)  # 5 classes, 8 or 80 training samples per class
    adv = fit_advisor(recs, source="synthetic")
    ex = examples(recs)
    col = {f: j for j, f in enumerate(FEATURES)}
    finite = np.where(np.isfinite(ex.X), ex.X, np.nan)
    np.testing.assert_allclose(adv.lo, np.nanmin(finite, axis=0))
    np.testing.assert_allclose(adv.hi, np.nanmax(finite, axis=0))
    x = ex.X[:6].copy()
    far = x.copy()
    far[:, col["log_classes"]] = np.log(100.0)
    far[:, col["log_per_class"]] = np.log(5000.0)
    far[0, col["linear_probe_vs_random"]] = 9.0
    far[1, col["log_dim"]] = np.nan  # a missing value stays missing
    far[2, col["log_dim"]] = np.log(4096.0)
    near = x.copy()
    near[:, col["log_classes"]] = np.log(5.0)
    near[:, col["log_per_class"]] = np.log(80.0)
    near[1, col["log_dim"]] = np.nan
    near[2, col["log_dim"]] = np.log(64.0)
    near[0, col["linear_probe_vs_random"]] = 9.0  # bounded by construction: left as it is
    clipped, outside = adv.clip(far)
    np.testing.assert_allclose(clipped, near)
    assert outside[:, col["log_classes"]].all() and outside[:, col["log_per_class"]].all()
    assert not outside[1, col["log_dim"]] and outside[2, col["log_dim"]]
    assert outside.sum() == 6 + 6 + 1
    a, b = adv.predict(far), adv.predict(near)
    for k in ("acc", "p_beats", "p_negative", "data_x"):
        np.testing.assert_allclose(a[k], b[k])
    assert a["strategy"] == b["strategy"] and (a["outside"] == outside).all()
    # without the range (an advisor written before it was kept), nothing is clipped
    blob = json.loads(adv.to_json(tmp_path / "a.json").read_text())
    del blob["lo"], blob["hi"]
    (tmp_path / "old.json").write_text(json.dumps(blob))
    old = load_advisor(tmp_path / "old.json")
    np.testing.assert_array_equal(old.clip(far)[0], far)
    assert not old.predict(far)["outside"].any()
    assert not np.allclose(old.predict(far)["p_beats"], a["p_beats"])


def test_calibration_of_known_probabilities():
    p = np.array([0.1, 0.1, 0.9, 0.9])
    y = np.array([0, 0, 1, 1])
    cal = calibration(p, y)
    assert cal["brier"] == pytest.approx(0.01) and cal["ece"] == pytest.approx(0.1)
    assert [b["n"] for b in cal["reliability"]] == [2, 2]


def test_ece_under_calibration_matches_the_binned_ece_of_each_draw():
    rng = np.random.default_rng(3)
    p = rng.random(40)
    y = (rng.random(40) < p).astype(float)
    got = ece_consistency(p, y, draws=200, seed=5)
    draws = np.random.default_rng(5).random((200, 40)) < p  # the same draws, one at a time
    null = np.array([calibration(p, d.astype(float))["ece"] for d in draws])
    assert got["ece_calibrated"] == pytest.approx(null.mean(), abs=1e-12)
    assert got["ece_calibrated_95"] == pytest.approx(np.quantile(null, 0.95), abs=1e-12)
    seen = calibration(p, y)["ece"]
    assert got["ece_p"] == pytest.approx((1 + np.sum(null >= seen - 1e-12)) / 201)


def test_ece_under_calibration_shrinks_with_examples_and_flags_miscalibration():
    rng = np.random.default_rng(0)
    small, large = rng.random(50), rng.random(5000)
    few = ece_consistency(small, (rng.random(50) < small).astype(float))
    many = ece_consistency(large, (rng.random(5000) < large).astype(float))
    assert few["ece_calibrated"] > 0.05 > 0.02 > many["ece_calibrated"]
    assert few["ece_p"] > 0.05 and many["ece_p"] > 0.05  # calibrated outcomes: not flagged
    wrong = ece_consistency(large, (rng.random(5000) < large ** 3).astype(float))
    assert wrong["ece_p"] < 0.01


def test_a_strategy_is_recommended_only_on_the_kinds_of_target_it_was_measured_on():
    recs = _synthetic()
    for rec in recs:  # LoRA measured on the image targets alone, where it wins
        t = int(rec["target"][1:])
        rec["modality"] = "image" if t < 4 else "text"
        if t < 4:
            for size in rec["truth"].values():
                size["strategies"]["lora"] = {"transfer_acc": size["best_acc"] + 0.05}
    adv = fit_advisor(recs, strategy_alpha=float("inf"))
    assert adv.strategies["lora"]["modalities"] == ["image"]
    assert adv.strategies["full"]["modalities"] == ["image", "text"]
    x = examples(recs).X[:10]
    assert set(adv.predict(x, modality="image")["strategy"]) == {"lora"}
    assert set(adv.predict(x)["strategy"]) == {"lora"}  # no kind given: every strategy
    text = adv.predict(x, modality="text")
    assert "lora" not in text["strategy_acc"] and "lora" not in text["strategy"]
    assert text["unmeasured_strategies"] == ["lora"]
    # a kind nothing was measured on: every strategy, extrapolated, and said so
    series = adv.predict(x, modality="series")
    assert "lora" in series["strategy_acc"] and len(series["unmeasured_strategies"]) == 3


def test_the_ranking_penalty_is_chosen_on_held_out_targets():
    from scipy.stats import weightedtau

    from transferscope.advise.model import RANK_ALPHAS, _choose_rank_alpha, _ridge

    groups = np.repeat(np.arange(6), 8)  # 6 targets, 2 cells of 4 candidates each
    cells = np.repeat(np.arange(12), 4)

    def held_out_tau(dz, dy, alpha):  # the reference: every target held out in turn
        taus = []
        for g in range(6):
            held = groups == g
            pred = dz[held] @ _ridge(dz[~held], dy[~held], alpha)[0]
            taus += [weightedtau(pred[cells[held] == c], dy[held][cells[held] == c])[0]
                     for c in np.unique(cells[held])]
        return np.mean(taus)

    for seed in range(5):
        rng = np.random.default_rng(seed)
        latent = rng.normal(size=48)
        # 17 noisy copies of what orders the candidates (the benchmark's features are
        # correlated too): a small penalty fits their noise
        dz = latent[:, None] + 0.3 * rng.normal(size=(48, 17))
        dy = 0.05 * latent + 0.02 * rng.normal(size=48)
        chosen = _choose_rank_alpha(dz, dy, cells, groups)
        taus = {a: held_out_tau(dz, dy, a) for a in RANK_ALPHAS}
        assert chosen == max(RANK_ALPHAS, key=lambda a: (round(taus[a], 12), a)), seed
        assert chosen > min(RANK_ALPHAS) and taus[chosen] > taus[min(RANK_ALPHAS)] + 0.05
    # too few targets to hold any out: the default
    assert _choose_rank_alpha(dz[:16], dy[:16], cells[:16], groups[:16]) == 3.0


def test_the_shipped_advisor_loads():
    adv = load_advisor()
    assert adv.features == list(FEATURES) and adv.trained_on["examples"] >= 4


NET = """
import torch
from torch import nn

def fcn(width=8):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                         nn.Flatten())

def wide():
    return fcn(32)
"""


@pytest.fixture
def target(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = rng.standard_normal((60, 1, 24)) + y[:, None, None] * np.linspace(0, 1, 24)
    np.savez(tmp_path / "s.npz", X=x.astype(np.float32), y=y)
    adv = fit_advisor(_synthetic(n_targets=4), source="synthetic")
    return tmp_path, adv.to_json(tmp_path / "advisor.json")


def test_a_target_no_probe_learns_is_said_to_give_the_advisor_nothing(target):
    from transferscope.advise.api import _unlearnable_note, advise
    from transferscope.data import load_dataset

    d, adv = target
    rng = np.random.default_rng(1)
    y = np.arange(60) % 3  # labels that have nothing to do with the series
    np.savez(d / "noise.npz", X=rng.standard_normal((60, 1, 24)).astype(np.float32),
             y=rng.permutation(y))
    res = advise(load_dataset(str(d / "noise.npz")), [f"torch:{d / 'net.py'}:fcn"],
                 advisor=str(adv), layers=False, subsamples=2, cache_dir=str(d / "c"))
    note = next(n for n in res.notes if n.startswith("target: "))
    assert "largest class (0.333)" in note and "unreliable" in note

    def cand(value, random, raw):
        return {"model": "m", "scores": {"linear_probe": {"value": value, "random": random,
                                                          "raw": raw}}}

    labels = np.array([0] * 54 + [1] * 46)  # the largest class: 0.54
    # Covid3Month_disc's numbers: 0.607 is 0.15 of the way from 0.54 to 1
    [note] = _unlearnable_note([cand(0.607, 0.595, 0.524)], labels)
    assert "0.607 (m)" in note and "0.15 of the way" in note
    assert "0.620 (m's random twin)" in _unlearnable_note([cand(0.6, 0.62, 0.5)], labels)[0]
    assert _unlearnable_note([cand(0.6, 0.7, 0.5)], labels) == []  # 0.35 of the way
    assert _unlearnable_note([cand(0.55, 0.5, 0.7)], labels) == []  # the raw input learns it
    assert _unlearnable_note([cand(None, None, None)], labels) == []  # nothing to judge by


def test_advise_orders_candidates_with_predictions_and_evidence(target):
    from transferscope.advise.api import advise
    from transferscope.data import load_dataset

    d, adv = target
    models = [f"torch:{d / 'net.py'}:fcn", f"torch:{d / 'net.py'}:wide"]
    res = advise(load_dataset(str(d / "s.npz")), models, advisor=str(adv), layers=False,
                 subsamples=2, cache_dir=str(d / "c"))
    assert sorted(r["model"] for r in res.rows) == sorted(models)
    preds = [r["pred_acc"] for r in res.rows]
    assert preds == sorted(preds, reverse=True)
    for r in res.rows:
        assert r["pred_acc_lo"] <= r["pred_acc"] <= r["pred_acc_hi"]
        assert 0 < r["p_beats_scratch"] < 1 and r["strategy"] in ("linear_probe", "full")
        assert "linear_probe" in r["evidence"] and "vs random" in r["evidence"]
        assert r["cut"] and r["head_width"] == 0
        assert r["data_x_lo"] < r["data_x"] < r["data_x_hi"] and r["time_x"] > 0
    assert {r["dim"] for r in res.rows} == {8, 32}
    # scored at the advisor's own width unless told otherwise (rank's default is pca:32)
    assert json.loads(adv.read_text())["trained_on"]["width"] == "none"
    assert not any(n.startswith(("width", "target:")) for n in res.notes)
    # the target's 3 classes and 40 samples per class lie outside the advisor's training data
    # (5 classes; 8 or 80 per class): read at its edge, and said so
    note = next(n for n in res.notes if n.startswith("range: "))
    assert "classes 3 (the benchmark's: 5 to 5)" in note
    # a saving ratio whose held-out fit kept the mean alone is said to be the same for all
    blob = json.loads(adv.read_text())
    assert blob["extras"] and not any(n.startswith(("data_x", "time_x")) for n in res.notes)
    name = sorted(blob["extras"])[0]
    blob["extras"][name]["alpha"] = "inf"
    (d / "mean_only.json").write_text(json.dumps(blob))
    again = advise(load_dataset(str(d / "s.npz")), models, advisor=str(d / "mean_only.json"),
                   subsamples=2, cache_dir=str(d / "c"))
    assert [n for n in again.notes if n.startswith(("data_x", "time_x"))] == [
        f"{name}: the benchmark's mean over {blob['extras'][name]['examples']} cells for every "
        "model (its features did not predict it on held-out targets), not a per-model "
        "prediction"]
    # only a random-init model: rank scores it as a twin, so there is no candidate to advise on
    with pytest.raises(InputError, match="Expected at least one pretrained candidate"):
        advise(load_dataset(str(d / "s.npz")), [f"random:{models[0]}"], advisor=str(adv),
               cache_dir=str(d / "c"))
    # a strategy measured on other kinds of target only is not recommended here, and said so
    blob = json.loads(adv.read_text())
    kind = load_dataset(str(d / "s.npz")).kind
    for name, m in blob["strategies"].items():
        m["modalities"] = ["text"] if name == "full" else [kind]
    (d / "text_full.json").write_text(json.dumps(blob))
    other = advise(load_dataset(str(d / "s.npz")), models, advisor=str(d / "text_full.json"),
                   subsamples=2, cache_dir=str(d / "c"))
    assert all(r["strategy"] != "full" and "full" not in r["strategy_evidence"]
               for r in other.rows)
    assert ("strategy: full not recommended: the advisor's training data measured it on text "
            f"targets only, not on {kind}") in other.notes
    profiled = advise(load_dataset(str(d / "s.npz")), models[:1], advisor=str(adv),
                      layers=True, subsamples=2, cache_dir=str(d / "c"), width="pca:4")
    assert profiled.rows[0]["cut"] in ("0", "1", "2", "3")
    assert any("width pca:4" in n and "at width none" in n for n in profiled.notes)


def test_cli_advise_and_fit(target, capsys):
    from tests.study.conftest import PAIR_SPEC, write_study
    from transferscope.cli import main

    d, adv = target
    model = f"torch:{d / 'net.py'}:fcn"
    assert main(["advise", "--data", str(d / "s.npz"), "--model", model, "--advisor", str(adv),
                 "--subsamples", "2", "--cache-dir", str(d / "c"), "--quiet",
                 "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["model"] == model and 0 < rows[0]["p_beats_scratch"] < 1
    assert main(["advise", "--data", str(d / "s.npz"), "--model", model, "--advisor", str(adv),
                 "--subsamples", "2", "--cache-dir", str(d / "c"),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "P(beats scratch)" in out and "advisor: fitted on 40 benchmark cells" in out
    # one answer per model: rank's risk label is evidence, not a column beside P(beats)
    header = out.splitlines()[0].split()
    assert "risk" not in header and rows[0]["risk"] and f"rank's label {rows[0]['risk']}" in out
    # --fit on a study with too few finished cells: one clear error, nothing written
    (d / "study").mkdir()
    spec = write_study(d / "study", PAIR_SPEC)
    assert main(["advise", "--fit", str(spec), "--out", str(d / "mine.json")]) == 2
    assert "at least 4 finished" in capsys.readouterr().err
    assert not (d / "mine.json").exists()
    # studies scored at different widths cannot train one advisor: one clear error
    (d / "other").mkdir()
    other = write_study(d / "other", PAIR_SPEC.replace('name = "', 'width = "none"\nname = "', 1))
    assert main(["advise", "--fit", str(spec), str(other), "--out", str(d / "mine.json")]) == 2
    err = capsys.readouterr().err
    assert "one width" in err and "none, pca:32" in err and len(err.strip().splitlines()) == 1
    assert not (d / "mine.json").exists()


def test_demo_advises_on_the_shipped_sources(monkeypatch, capsys):
    """The demo's image case without its EfficientNet (slow on a CPU): two shipped LeNets on
    scikit-learn's digits, through the shipped advisor, which puts the one that lost its
    plasticity last and flags it; a case whose data is missing is skipped with the reason."""
    from transferscope import cli

    monkeypatch.setattr(cli, "DEMO_CASES", (
        ("images", "sklearn:digits", ["zoo:lenet-mnist", "zoo:lenet-relabelled"], 10),
        ("missing", "fortunes:no-such-category", ["minilm"], 10)))
    assert cli.main(["demo", "--subsamples", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "most likely to transfer: zoo:lenet-mnist" in out
    assert "least likely: zoo:lenet-relabelled" in out
    row = next(line for line in out.splitlines() if line.startswith("zoo:lenet-relabelled"))
    assert " NT " in row  # P(negative transfer) above the flag's threshold
    assert re.search(r"least likely: zoo:lenet-relabelled \(P\(beats scratch\) 0\.\d\d; "
                     r"P\(negative transfer\) 0\.\d\d, flagged\)", out)
    # and how far the advisor can be trusted on image targets, from its held-out record, and
    # where the target lies outside its training data (digits: 10 classes)
    assert "held out on 4 image targets" in out
    assert re.search(r"note: range: .*classes 10 \(the benchmark's: 2 to \d\)", out)
    assert "== missing: skipped (Expected a fortunes category" in out


def test_every_demo_model_loads_offline():
    """Each case of the real demo names models its install ships (no download): in the text
    case MiniLM, WordLlama and the shipped shuffled-label BERT, so that it, too, says which
    transfers and which does not."""
    from transferscope import cli
    from transferscope.backends import create_backend

    for title, _, models, _ in cli.DEMO_CASES:
        assert len(models) >= 2, title
        for m in models:
            name = cli._resolve_demo_model(m)
            if m.startswith("effnet"):
                continue  # its own backend tests (geffnet, 20 MB of weights) cover it
            assert create_backend(name).name


def test_the_relabelled_lenet_has_lost_units_on_the_demos_digits():
    """zoo:lenet-relabelled is the LeNet make_zoo.py describes: many of its second
    convolution's channels never fire on scikit-learn's digits (44 % there, by the builder's
    count), where the MNIST LeNet's all do; this is why fine-tuning from it loses to scratch."""
    import torch
    from torch import nn

    from transferscope.backends import create_backend
    from transferscope.backends.images import to_tensor_batch
    from transferscope.data import load_dataset
    from transferscope.zoo import zoo_model

    digits = list(np.asarray(load_dataset("sklearn:digits").inputs)[:600])
    silent = {}
    for name in ("lenet-mnist", "lenet-relabelled"):
        b = create_backend(zoo_model(name))
        with torch.no_grad():
            conv2 = nn.Sequential(*list(b.module)[:5])(to_tensor_batch(digits, b.preprocessing))
        silent[name] = float((conv2.amax(dim=(0, 2, 3)) <= 0).float().mean())
    assert silent["lenet-mnist"] == 0.0
    assert silent["lenet-relabelled"] >= 0.25


def test_the_shipped_text_model_is_the_small_bert_it_says():
    """zoo:bert-shuffled: a Hugging Face folder inside the package (no download), the text
    benchmark's architecture (2 blocks of width 64) over a vocabulary of about 4,000 tokens,
    loaded as an hf: text model whose tokenizer keeps MiniLM's special tokens."""
    pytest.importorskip("transformers")
    from transferscope.backends import create_backend
    from transferscope.data import Dataset
    from transferscope.zoo import HERE, zoo_model

    name = zoo_model("bert-shuffled")
    assert name == f"hf:{HERE / 'bert-shuffled'}"
    b = create_backend(name)
    cfg = b.module.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, b.max_length) == (64, 2, 48)
    assert 3000 < cfg.vocab_size < 5000 and len(b.tokenizer) == cfg.vocab_size
    assert b.tokenizer.cls_token == "[CLS]" and b.tokenizer.pad_token_id == 0
    data = Dataset("t", "text", ["The law is an ass.", "Eat your vegetables."], np.array([0, 1]))
    assert b.features(data, ["hidden.2"])["hidden.2"].shape == (2, 64)
    with pytest.raises(InputError, match="Expected a shipped model"):
        zoo_model("bert")


def test_sign_constrained_logistic_keeps_its_signs_and_is_exact_when_they_hold():
    from transferscope.advise.model import MONOTONE_SIGNS, _logistic

    rng = np.random.default_rng(0)
    z = rng.standard_normal((200, 3))
    y = (z @ [1.5, -1.0, 0.5] + rng.logistic(size=200) > 0).astype(float)
    free = _logistic(z, y, 1.0)
    # the free fit already has these signs: bounds that hold change nothing (KKT)
    held = _logistic(z, y, 1.0, np.array([1.0, -1.0, 0.0]))
    np.testing.assert_allclose(held[0], free[0], atol=1e-6)
    assert held[1] == pytest.approx(free[1], abs=1e-6)
    # a bound the data contradict pins that coefficient at 0; the others refit around it
    w, _ = _logistic(z, y, 1.0, np.array([0.0, 1.0, 0.0]))
    assert w[1] == 0.0 and w[0] > 0 and not np.allclose(w[[0, 2]], free[0][[0, 2]])
    # the fitted advisor: a better-fitting source never lowers P(beats), never raises
    # P(negative)
    adv = fit_advisor(_synthetic())
    mono = MONOTONE_SIGNS > 0
    assert (np.asarray(adv.beats["coef"])[mono] >= 0).all()
    assert (np.asarray(adv.negative["coef"])[mono] <= 0).all()


def test_calibration_by_modality_finds_the_modality_whose_probabilities_are_off():
    """One modality's probabilities calibrated, the other's inverted: the pooled ECE mixes
    them, the per-modality rows tell them apart (and count targets, examples, flags)."""
    from types import SimpleNamespace

    from transferscope.advise.evaluation import by_modality

    rng = np.random.default_rng(0)
    n = 200
    p = rng.uniform(0.02, 0.98, 2 * n)
    y = np.concatenate([rng.random(n) < p[:n], p[n:] < 0.5])  # text: the opposite
    ex = SimpleNamespace(modalities=["image"] * n + ["text"] * n,
                         groups=[f"t{i % 4}" for i in range(n)] + [f"u{i % 3}" for i in range(n)],
                         beats=y, negative=~y, acc=np.zeros(2 * n))
    flag = p < 0.2
    rows = by_modality({"p_beats": p, "flag_negative": flag, "examples": ex})
    image, text = rows
    assert (image["modality"], image["targets"], image["examples"]) == ("image", 4, n)
    assert (text["modality"], text["targets"], text["examples"]) == ("text", 3, n)
    assert image["ece"] < 0.1 and image["ece_p"] > 0.05
    assert text["ece"] > 0.4 and text["ece_p"] < 0.01
    assert image["nt_flagged"] == int(flag[:n].sum())
    assert image["nt_caught"] == int((flag & ~y)[:n].sum()) > 0
    assert text["nt_caught"] == 0  # its flags (P < 0.2) all beat scratch there
    assert text["nt_actual"] == int((~y)[n:].sum())
    assert text["beat_rate"] == pytest.approx(float(np.mean(p[n:] < 0.5)))


def test_evaluate_advice_reports_each_modality_as_the_pooled_row_when_there_is_one():
    res = evaluate_advice(_synthetic(n_targets=4, n_sources=4))
    adv = next(r for r in res["rows"] if r["predictor"] == "advisor")
    (row,) = res["by_modality"]
    assert row["modality"] == "image" and row["examples"] == adv["examples"]
    assert row["brier"] == pytest.approx(adv["brier"]) and row["ece"] == pytest.approx(adv["ece"])
    assert row["nt_flagged"] == adv["nt_flagged"] and row["f1"] == pytest.approx(adv["f1"],
                                                                                 nan_ok=True)


def test_the_advisor_keeps_its_held_out_record_and_advise_says_it(tmp_path):
    """The leave-one-target-out rows per modality travel with the advisor's JSON, and the
    note for a target names its own modality's numbers (or that there are none)."""
    from transferscope.advise.api import held_out_note
    from transferscope.advise.evaluation import by_modality

    recs = _synthetic(n_targets=4, n_sources=4)
    adv = fit_advisor(recs)
    assert held_out_note(adv, "image") is None  # never evaluated: nothing claimed
    rows = by_modality(loto_predictions(recs))
    rows[0]["precision"] = float("nan")  # undefined (nothing flagged): kept as null in JSON
    adv.attach_held_out(rows)
    back = load_advisor(adv.to_json(tmp_path / "a.json"))
    assert back.held_out == adv.held_out and back.held_out["image"]["precision"] is None
    h = back.held_out["image"]
    note = held_out_note(back, "image")
    assert f"held out on {h['targets']} image targets ({h['examples']} candidates" in note
    assert f"Brier {h['brier']:.3f}" in note and f"ECE {h['ece']:.3f}" in note
    if h["nt_actual"]:
        assert f"of {h['nt_actual']} negative transfers the flag caught {h['nt_caught']}" in note
    # a modality whose ECE is beyond what chance explains is named so
    back.held_out["image"]["ece_p"] = 0.01
    assert "miscalibrated beyond chance, p 0.01" in held_out_note(back, "image")
    assert "never evaluated on text targets" in held_out_note(back, "text")


def test_the_shipped_advisor_knows_how_it_fared_on_each_modality():
    adv = load_advisor()
    assert set(adv.held_out) == {"image", "series", "text"}
    assert sum(h["targets"] for h in adv.held_out.values()) == adv.trained_on["targets"]


def test_width_alone_never_orders_candidates_on_a_target():
    """Even where the widest source is the best one in every training target, two candidates
    that differ in feature width only get the same predicted accuracy: width is no reason for
    one to rank above the other (what the width table measures in the scores)."""
    from transferscope.advise.features import FEATURES

    recs = _synthetic(n_targets=6, n_sources=4)
    for rec in recs:  # the best-fitting source is the widest
        margin = rec["scores"]["linear_probe"]["value"] - rec["scores"]["linear_probe"]["random"]
        rec["dim"] = int(64 * 2 ** (10 * (margin + 0.2)))
    adv = fit_advisor(recs)
    x = examples(recs).X[:2].copy()
    x[1] = x[0]
    x[1, FEATURES.index("log_dim")] += 2.0  # about 7 times wider
    pred = adv.predict(x)
    assert pred["acc"][0] == pytest.approx(pred["acc"][1], abs=1e-12)
    assert adv.predict(x[[0]])["acc"][0] == pytest.approx(pred["acc"][0])  # cell level alike


def test_a_target_harder_than_any_benchmark_target_is_named_with_the_way_it_moves_p_beats():
    from transferscope.advise.api import _difficulty_notes

    adv = load_advisor()
    j = {f: FEATURES.index(f) for f in ("linear_probe_random", "knn_random")}
    x = np.tile(np.asarray(adv.mean), (3, 1))  # inside every range
    assert _difficulty_notes(adv, x, ["a", "b", "c"]) == []
    lo, hi = adv.lo[j["knn_random"]], adv.hi[j["knn_random"]]
    x[1, j["knn_random"]] = lo - 0.03
    [note] = _difficulty_notes(adv, x, ["a", "b", "c"])
    assert note.startswith("difficulty: harder for the untrained architecture")
    assert f"kNN accuracy {lo - 0.03:.3f} (b) (the benchmark's: {lo:.3f} to {hi:.3f}" in note
    assert "linear-probe" not in note and "(a)" not in note
    # the direction is the advisor's own: a lower twin kNN accuracy moves P(beats) the way its
    # coefficient says, and the predictions move so
    coef = adv.beats["coef"][j["knn_random"]]
    assert ("a lower one raises" if coef < 0 else "a lower one lowers") in note
    inside = adv.predict(x[[0]])["p_beats"][0]
    x[0, j["knn_random"]] = lo - 0.03
    assert (adv.predict(x[[0]])["p_beats"][0] > inside) == (coef < 0)
    x[2, j["linear_probe_random"]] = adv.hi[j["linear_probe_random"]] + 0.01
    [note] = _difficulty_notes(adv, x, ["a", "b", "c"])
    assert note.startswith("difficulty: easier and harder")
    assert "linear-probe accuracy" in note and "a higher one" in note


def test_negatives_that_hold_at_twice_the_scratch_budget_are_counted_and_caught():
    """The issue's "truly negative" cells (NEGATIVE, robust to a doubled scratch budget) are
    told apart from the others; every predictor's row says how many of them it flagged."""
    recs = _synthetic()
    negative = [(rec, size) for rec in recs for size in rec["truth"].values()
                if size["verdict"] == "NEGATIVE"]
    assert len(negative) >= 4
    held = negative[::2]  # half hold; of the rest one was checked and vanished
    for _, size in held:
        size["strategies"][size["best_strategy"]]["budget_holds"] = True
    size = negative[1][1]
    size["strategies"][size["best_strategy"]]["budget_holds"] = False
    ex = examples(recs)
    assert ex.robust.sum() == len(held) and not (ex.robust & ~ex.negative).any()
    res = evaluate_advice(recs, metrics=["linear_probe"])
    flags = loto_predictions(recs)["flag_negative"]
    adv, lp = res["rows"]
    assert adv["nt_robust"] == lp["nt_robust"] == len(held)
    assert adv["nt_robust_caught"] == int((ex.robust & flags).sum())
    assert 0 <= lp["nt_robust_caught"] <= len(held)
