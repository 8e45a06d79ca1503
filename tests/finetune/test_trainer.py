import numpy as np
import pytest
import torch
from torch import nn

from transferscope import InputError
from transferscope.backends.simple import UserModuleBackend
from transferscope.finetune import TrainConfig, TransferModel, evaluate, fit, make_strategy


def tiny_backend():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 6, 5, padding=2), nn.BatchNorm1d(6), nn.ReLU(),
                        nn.Conv1d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                        nn.Flatten(), nn.Linear(8, 4))
    return UserModuleBackend("tiny", net)


def data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    t = np.linspace(0, 1, 32)
    x = np.sin(2 * np.pi * (y[:, None] + 1) * t) + 0.5 * rng.standard_normal((n, 32))
    x = torch.tensor(x[:, None, :], dtype=torch.float32)
    y = torch.tensor(y)
    return (x[:80], y[:80]), (x[80:], y[80:])


CFG = TrainConfig(min_steps=0, lr_grid=(1.0,),
                  epochs=6, batch_size=16, patience=10, seed=0, device="cpu")


def run(name, cfg=CFG, **opts):
    model = TransferModel(tiny_backend(), 3, layer="4")
    tr, va = data()
    hist = fit(model, make_strategy(name, **opts), tr, va, cfg)
    return model, hist


def params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_linear_probe_freezes_the_backbone_bitwise():
    model = TransferModel(tiny_backend(), 3, layer="4")
    before = params(model.backbone)  # includes batch-norm running statistics
    fit(model, make_strategy("linear_probe", lr=1e-2), *data(), CFG)
    after = params(model.backbone)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_freeze_first_k_blocks():
    model = TransferModel(tiny_backend(), 3, layer="4")
    names = [n for n, _ in model.backbone_blocks()]
    assert names[:3] == ["0", "1", "3"]  # blocks with parameters, in order
    before = params(model.backbone)
    fit(model, make_strategy("freeze", k=2, lr=1e-2, backbone_lr=1e-2), *data(), CFG)
    after = params(model.backbone)
    for k in before:
        unchanged = k.split(".")[0] in ("0", "1", "7")  # frozen, or after the cut at "4"
        assert torch.equal(before[k], after[k]) == unchanged, k
    with pytest.raises(InputError, match="did you mean"):
        fit(TransferModel(tiny_backend(), 3, layer="4"), make_strategy("freeze", blocks=("3x",)),
            *data(), CFG)


def test_lp_ft_starts_from_the_linear_probe_head():
    heads = []
    model = TransferModel(tiny_backend(), 3, layer="4")
    strategy = make_strategy("lp_ft", probe_epochs=3, lr=1e-2)
    tr, va = data()

    def snap(row):
        heads.append((row["epoch"], params(model.head), params(model.backbone)))

    hist = fit(model, strategy, tr, va, CFG, on_epoch=snap)
    assert [r["stage"] for r in hist.epochs] == ["linear_probe"] * 3 + ["full"] * 3
    probe = TransferModel(tiny_backend(), 3, layer="4")
    fit(probe, make_strategy("linear_probe", lr=1e-2), tr, va,
        TrainConfig(min_steps=0, lr_grid=(1.0,),
                    epochs=3, batch_size=16, patience=10, seed=0, device="cpu"))
    probe_head = params(probe.head)
    # the probe phase reproduces a plain linear probe, and the backbone is untouched by it
    stage1_best = max(hist.epochs[:3], key=lambda r: r["val_acc"])["epoch"]
    assert all(torch.allclose(heads[stage1_best][1][k], probe_head[k]) for k in probe_head)
    assert all(torch.equal(heads[2][2][k], params(tiny_backend().module)[k])
               for k in heads[2][2])


def test_l2sp_pulls_toward_the_pretrained_weights():
    def drift(model):
        return sum(((p - model.pretrained_state[n]) ** 2).sum().item()
                   for n, p in model.backbone.named_parameters())

    free, _ = run("full", lr=1e-2, backbone_lr=1e-2)
    pulled, _ = run("l2sp", lr=1e-2, backbone_lr=1e-2, alpha=10.0)
    assert drift(pulled) < 0.5 * drift(free)


def test_early_stopping_keeps_the_best_validation_epoch():
    cfg = TrainConfig(min_steps=0, lr_grid=(1.0,),
                      epochs=30, batch_size=16, patience=2, seed=0, device="cpu")
    model, hist = run("full", cfg, lr=5e-2, backbone_lr=5e-2)
    assert hist.stopped_early and len(hist.epochs) < 30
    assert hist.best_epoch == int(np.argmax([r["val_acc"] for r in hist.epochs]))
    assert evaluate(model, data()[1])["acc"] == pytest.approx(hist.best_val_acc)
    assert np.isfinite(hist.gap)


def test_same_seed_same_result_and_scratch_reinitialises():
    a, ha = run("full")
    b, hb = run("full")
    assert all(torch.equal(x, y) for x, y in zip(params(a).values(), params(b).values(),
                                                  strict=True))
    assert [r["val_loss"] for r in ha.epochs] == [r["val_loss"] for r in hb.epochs]
    s, _ = run("scratch")
    assert not torch.equal(s.pretrained_state["0.weight"], s.backbone[0].weight.detach())


def test_layerwise_decay_groups_and_strategy_errors():
    model = TransferModel(tiny_backend(), 3, layer="4")
    model.build_head(data()[0][0][:2])
    groups = make_strategy("llrd", backbone_lr=1.0, decay=0.5).param_groups(model)
    assert [g["lr"] for g in groups] == [1e-3, 0.25, 0.5, 1.0]  # head, then blocks 0, 1, 3
    with pytest.raises(InputError, match="did you mean 'lp_ft'"):
        make_strategy("lpft")
    with pytest.raises(InputError, match="did you mean 'alpha'"):
        make_strategy("l2sp", alpah=1)
    with pytest.raises(InputError, match="lr > 0"):
        make_strategy("full", lr=0)


def test_gradual_unfreeze_opens_blocks_from_the_top():
    model = TransferModel(tiny_backend(), 3, layer="4")
    model.build_head(data()[0][0][:2])
    s = make_strategy("gradual_unfreeze", every=2)
    s.param_groups(model)
    opened = []
    for epoch in range(8):
        s.on_epoch_start(epoch, model)
        opened.append([n for n, b in model.backbone_blocks()
                       if all(p.requires_grad for p in b.parameters())])
    assert opened[0] == [] and opened[2] == ["3"] and opened[4] == ["1", "3"]
    assert opened[7] == ["0", "1", "3"]
    before = params(model.backbone)
    model2, hist = run("gradual_unfreeze", TrainConfig(min_steps=0, lr_grid=(1.0,),
                                                       epochs=2, batch_size=16, seed=0,
                                                      device="cpu"), every=5)
    assert all(torch.equal(before[k], params(model2.backbone)[k]) for k in before)


def test_bss_penalty_is_the_smallest_singular_values():
    model = TransferModel(tiny_backend(), 3, layer="4")
    x = data()[0][0][:16]
    model.build_head(x)
    model(x)
    s = torch.linalg.svdvals(model.last_features)
    pen = make_strategy("bss", eta=2.0, k=2).penalty(model)
    assert pen.item() == pytest.approx(2.0 * (s[-2:] ** 2).sum().item(), rel=1e-5)
    _, hist = run("bss", eta=1e-2)
    assert np.isfinite(hist.best_val_acc)


def test_save_and_load_round_trip(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def tiny():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv1d(1, 6, 5, padding=2), nn.BatchNorm1d(6),\n"
        "        nn.ReLU(), nn.Conv1d(6, 8, 3, padding=1), nn.ReLU(),\n"
        "        nn.AdaptiveAvgPool1d(1), nn.Flatten())\n")
    from transferscope.backends import create_backend
    from transferscope.finetune import load_model, save_model

    name = f"torch:{tmp_path / 'net.py'}:tiny"
    model = TransferModel(create_backend(name), 3, layer="4", head_width=5)
    fit(model, make_strategy("full"), *data(), CFG)
    verdict = {"arms": [{"arm": "transfer", "strategy": "full", "test_acc": 0.9, "ci_lo": 0.8,
                         "ci_hi": 1.0}], "gain": (0.1, 0.0, 0.2), "verdict": "INCONCLUSIVE"}
    from transferscope.config import training_run

    run = training_run(model.backend, "fp", "full", None, CFG, seed=0, layer="4",
                       head_width=5)
    out = save_model(model, tmp_path / "saved", classes=[0, 1, 2], model_name=name,
                     run=run, verdict=verdict)
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    assert "INCONCLUSIVE" in (out / "README.md").read_text()
    loaded, config = load_model(out)
    x = data()[1][0]
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert config["classes"] == ["0", "1", "2"] and config["transferscope_version"]
    assert config["run"] == run  # the run identity travels with the saved model
    with pytest.raises(InputError, match="config.json"):
        load_model(tmp_path / "nothing")


@pytest.mark.parametrize("head_width", [0, 16])
def test_frozen_backbone_features_are_computed_once_and_train_the_same(monkeypatch, head_width):
    import dataclasses

    from transferscope.finetune import trainer

    def dropout_backend():  # a parameterless Dropout outside every block: eval when frozen
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv1d(1, 6, 5, padding=2), nn.BatchNorm1d(6), nn.ReLU(),
                            nn.Dropout(0.5), nn.AdaptiveAvgPool1d(1), nn.Flatten())
        return UserModuleBackend("drop", net)

    cfg = dataclasses.replace(CFG, augment="none")

    def fitted(cache_bytes):
        monkeypatch.setattr(trainer, "FEATURE_CACHE_BYTES", cache_bytes)
        model = TransferModel(dropout_backend(), 3, head_width=head_width)
        calls = []
        model.backbone[0].register_forward_hook(lambda *a: calls.append(1))
        hist = fit(model, make_strategy("linear_probe", lr=1e-2), *data(), cfg)
        return model, hist, len(calls)

    fast, fast_hist, fast_calls = fitted(1 << 30)
    slow, slow_hist, slow_calls = fitted(0)
    assert fast_calls <= 1 + 2 * 5 and slow_calls > 6 * 5  # once per batch of train + val
    for k, v in params(slow.head).items():
        torch.testing.assert_close(params(fast.head)[k], v, rtol=1e-5, atol=1e-6)
    for a, b in zip(fast_hist.epochs, slow_hist.epochs, strict=True):
        assert a["val_acc"] == b["val_acc"] and a["train_acc"] == b["train_acc"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    assert fast_hist.best_epoch == slow_hist.best_epoch


def test_features_are_not_fixed_when_training_can_change_them():
    from transferscope.finetune import trainer

    model = TransferModel(tiny_backend(), 3, layer="4")
    tr, va = data()
    model.build_head(tr[0][:2])
    args = ((tr, va), 16, "cpu", "fp32")
    lp, full = make_strategy("linear_probe"), make_strategy("full")
    lp.param_groups(model)
    assert trainer._fixed_features(model, lp, None, *args) is not None
    assert trainer._fixed_features(model, lp, lambda x: x, *args) is None  # augmented batches
    assert trainer._fixed_features(model, make_strategy("bss"), None, *args) is None  # penalty
    full.param_groups(model)
    assert trainer._fixed_features(model, full, None, *args) is None  # the backbone trains
