"""Data augmentation of training batches: the transforms, auto, errors, and that the trainer
augments training batches only."""

import dataclasses

import pytest
import torch
from torch import nn

from tests.finetune.test_trainer import CFG, data, tiny_backend
from transferscope import InputError
from transferscope.backends.simple import UserModuleBackend
from transferscope.config import TrainConfig
from transferscope.finetune import TransferModel, fit, make_strategy, trainer
from transferscope.finetune.augment import Augmenter, augmenter, crop_flip, jitter, resolve, scale
from transferscope.finetune.trainer import predict


def ramp(b=64, c=2, h=16, w=12):
    """Images whose every pixel value is distinct and nonzero."""
    one = torch.arange(1, c * h * w + 1, dtype=torch.float32).reshape(1, c, h, w)
    return one.repeat(b, 1, 1, 1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_shapes_are_preserved():
    for x in (torch.randn(5, 3, 32, 32), torch.randn(4, 1, 8, 12), torch.randn(3, 1, 3, 3)):
        assert Augmenter("image")(x).shape == x.shape
    for x in (torch.randn(5, 2, 50), torch.randn(3, 1, 1)):
        out = Augmenter("series")(x)
        assert out.shape == x.shape and torch.isfinite(out).all()


def test_crop_flip_is_a_window_of_the_zero_padded_image_maybe_mirrored():
    x = ramp()
    out = crop_flip(x, gen())
    h, w = x.shape[2:]
    ph, pw = round(h / 8), round(w / 8)  # 2 and 2 (round(1.5) = 2)
    padded = nn.functional.pad(x, (pw, pw, ph, ph))
    found = []
    for b in range(len(x)):
        matches = [(top, left, flip)
                   for top in range(2 * ph + 1) for left in range(2 * pw + 1)
                   for flip in (False, True)
                   if torch.equal(out[b], (lambda win: win.flip(-1) if flip else win)(
                       padded[b, :, top:top + h, left:left + w]))]
        assert len(matches) == 1, b  # the values come from the padded input, nowhere else
        found.append(matches[0])
    assert not torch.equal(out, x)
    assert {f for _, _, f in found} == {False, True}  # both flips occur
    assert len({(t, s) for t, s, _ in found}) > 5  # the offsets vary per sample
    assert 0.3 < sum(f for _, _, f in found) / len(found) < 0.7


def test_crop_padding_is_an_eighth_of_the_height_at_least_one_pixel():
    x = ramp(b=400, c=1, h=32, w=32)
    out = crop_flip(x, gen())
    zero_rows = (out == 0).all(dim=3).sum(dim=2)  # rows of padding per sample
    assert zero_rows.max().item() == 4  # 4 px at 32 px (the CIFAR recipe)
    tiny = crop_flip(ramp(b=400, c=1, h=3, w=3), gen())
    assert (tiny == 0).all(dim=3).sum(dim=2).max().item() == 1


def test_deterministic_under_a_seed_and_different_under_another():
    for mode, x in (("image", torch.randn(16, 3, 16, 16)), ("series", torch.randn(16, 2, 40))):
        a, b, other = Augmenter(mode, 0), Augmenter(mode, 0), Augmenter(mode, 1)
        first = a(x)
        assert torch.equal(first, b(x))
        assert not torch.equal(first, other(x))
        assert not torch.equal(a(x), first)  # the next batch gets fresh draws
        assert torch.equal(augmenter(mode, x, seed=0)(x), first)


def test_series_jitter_and_scaling_statistics():
    x = 5 + 2 * torch.randn(4000, 1, 200, generator=gen(7))
    noise = (jitter(x, gen()) - x) / x.std(dim=-1, keepdim=True)
    assert abs(noise.mean().item()) < 0.001
    assert noise.std().item() == pytest.approx(0.03, rel=0.05)
    factor = scale(x, gen()) / x
    assert torch.allclose(factor, factor[..., :1].expand_as(factor), rtol=1e-5)  # per series
    assert factor[:, 0, 0].mean().item() == pytest.approx(1.0, abs=0.01)
    assert factor[:, 0, 0].std().item() == pytest.approx(0.1, rel=0.1)
    # a flat series gets no noise, only its factor
    flat = torch.full((3000, 2, 50), 2.0)
    out = Augmenter("series")(flat)
    assert torch.equal(out, out[..., :1].expand_as(out))
    assert (out / 2).mean().item() == pytest.approx(1.0, abs=0.01)
    assert (out / 2).std().item() == pytest.approx(0.1, rel=0.1)


def test_auto_picks_by_the_prepared_batch():
    assert resolve("auto", torch.randn(2, 3, 8, 8)) == "image"
    assert resolve("auto", torch.randn(2, 1, 30)) == "series"
    assert resolve("auto", torch.randn(2, 10)) == "none"  # tables, features
    assert resolve("auto", torch.zeros(2, 2, 16, dtype=torch.int64)) == "none"  # token ids
    assert resolve("auto", {"input_ids": torch.zeros(2, 4)}) == "none"
    assert augmenter("auto", torch.randn(2, 10)) is None
    assert augmenter("none", torch.randn(2, 3, 8, 8)) is None
    assert augmenter("auto", torch.randn(2, 3, 8, 8)).mode == "image"


def test_an_explicit_mode_on_the_wrong_batch_is_one_line():
    cases = [("image", torch.randn(2, 1, 30), "4-D floating"),
             ("image", torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "4-D floating"),
             ("series", torch.randn(2, 3, 8, 8), "3-D floating"),
             ("series", torch.zeros(2, 2, 16, dtype=torch.int64), "3-D floating"),
             ("series", {"input_ids": 0}, "got a dict"),
             ("bogus", torch.randn(2, 1, 30), "augment among")]
    for mode, x, match in cases:
        with pytest.raises(InputError, match=match) as err:
            augmenter(mode, x)
        assert "\n" not in str(err.value) and "--augment" in str(err.value)


def test_train_config_validates_augment_and_keys_it():
    with pytest.raises(InputError, match="Expected augment among auto, none, image, series, "
                                         "got 'bogus'; e.g. --augment none"):
        TrainConfig(augment="bogus")
    assert TrainConfig().identity()["augment"] == "auto"
    assert TrainConfig(augment="none").identity() != TrainConfig().identity()


def _spy(monkeypatch):
    calls = []

    def spying(mode, example, seed=0):
        real = augmenter(mode, example, seed=seed)
        if real is None:
            return None

        def augment(x):
            calls.append((real.mode, x.clone()))
            return real(x)
        return augment

    monkeypatch.setattr(trainer, "augmenter", spying)
    return calls


def test_the_trainer_augments_training_batches_only(monkeypatch):
    calls = _spy(monkeypatch)
    (xt, yt), (xv, yv) = data()
    model = TransferModel(tiny_backend(), 3, layer="4")
    hist = fit(model, make_strategy("full", lr=1e-2), (xt, yt), (xv, yv), CFG)
    assert len(calls) == len(hist.epochs) * 5  # 80 samples, batches of 16, every epoch
    assert {mode for mode, _ in calls} == {"series"}
    rows = torch.cat([x for _, x in calls]).flatten(1)

    def among(part):
        return (rows[:, None, :] == part.flatten(1)[None]).all(-1).any(1)

    # every augmented row is a training row; no validation row ever reaches the augmenter
    assert among(xt).all() and not among(xv).any()
    n = len(calls)
    first, second = predict(model, xv), predict(model, xv)
    assert torch.equal(first, second) and len(calls) == n  # prediction is never augmented


def test_augmentation_changes_training_and_reruns_are_identical():
    def trained(cfg):
        model = TransferModel(tiny_backend(), 3, layer="4")
        fit(model, make_strategy("full", lr=1e-2), *data(), cfg)
        return predict(model, data()[1][0])

    auto = trained(CFG)
    assert torch.equal(auto, trained(CFG))
    assert not torch.equal(auto, trained(dataclasses.replace(CFG, augment="none")))
    with pytest.raises(InputError, match="4-D floating"):
        trained(dataclasses.replace(CFG, augment="image"))


def test_images_are_cropped_and_flipped_in_training(monkeypatch):
    calls = _spy(monkeypatch)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 2))
    model = TransferModel(UserModuleBackend("tiny2d", net), 2, layer="3")
    x, y = torch.randn(24, 3, 8, 8), torch.arange(24) % 2
    hist = fit(model, make_strategy("full"), (x[:16], y[:16]), (x[16:], y[16:]),
               dataclasses.replace(CFG, epochs=1, batch_size=8))
    assert [mode for mode, _ in calls] == ["image"] * (2 * len(hist.epochs))
