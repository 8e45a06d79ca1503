"""Fine-tuning on a streamed split trains the same model as on in-memory tensors; --precision
and --num-workers reach the trainer."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fast import FAST_FINETUNE
from tests.features.test_streaming_extract import image_backend
from transferscope import InputError
from transferscope.cli import main
from transferscope.config import TrainConfig
from transferscope.data.stream import Examples, open_image_folder
from transferscope.finetune.run import correct_on, make_split, train_on_split


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for k, c in enumerate(("a", "b")):
        (root / c).mkdir(parents=True)
        for i in range(15):
            a = rng.integers(0, 120, (18, 18, 3), dtype=np.uint8) + 100 * k  # separable
            Image.fromarray(a.astype(np.uint8)).save(root / c / f"{i}.png")
    return root


CFG = TrainConfig(min_steps=0, lr_grid=(1.0,),
                  epochs=3, batch_size=4, patience=10, seed=0, device="cpu")


def train(split, cfg=CFG, strategy="full"):
    return train_on_split(image_backend(), split, strategy, {}, cfg, layer="5")


def test_streamed_split_trains_the_same_weights_as_in_memory(folder):
    b, data = image_backend(), open_image_folder(folder)
    memory = make_split(b, data, stream=False)
    assert isinstance(memory.train, tuple) and isinstance(make_split(b, data).train, tuple)
    net_m, hist_m = train(memory)
    for workers in (0, 2):
        streamed = make_split(b, data, stream=True, num_workers=workers)
        assert isinstance(streamed.train, Examples)
        net_s, hist_s = train(streamed)
        for (k, v), w in zip(net_m.state_dict().items(), net_s.state_dict().values(),
                             strict=True):
            torch.testing.assert_close(w, v, rtol=1e-6, atol=1e-7, msg=k)
        assert [e["train_loss"] for e in hist_s.epochs] == pytest.approx(
            [e["train_loss"] for e in hist_m.epochs], rel=1e-6)
        np.testing.assert_array_equal(correct_on(net_s, streamed.test),
                                      correct_on(net_m, memory.test))


def test_bf16_training_on_the_cpu_is_close_to_fp32(folder):
    split = make_split(image_backend(), open_image_folder(folder), stream=False)
    _, fp32 = train(split, CFG, "linear_probe")
    _, bf16 = train(split, TrainConfig(**{**CFG.__dict__, "precision": "bf16"}), "linear_probe")
    a, b = ([e["train_loss"] for e in h.epochs] for h in (fp32, bf16))
    assert a != b  # autocast ran
    # bf16 rounds activations to 8 bits of mantissa: losses agree to a few percent
    assert b == pytest.approx(a, rel=0.05)


def test_precision_enters_a_run_identity_only_when_not_auto():
    assert "precision" not in TrainConfig().identity()  # keys of older runs are unchanged
    assert TrainConfig(precision="bf16").identity()["precision"] == "bf16"
    assert "num_workers" not in TrainConfig(num_workers=2).identity()


@pytest.mark.parametrize("kw,match", [
    ({"precision": "half"}, r"Expected precision among auto, fp32, bf16, fp16, got 'half'"),
    ({"num_workers": -2}, r"Expected num_workers >= 0 .* got -2"),
])
def test_bad_train_settings_are_one_line(kw, match):
    with pytest.raises(InputError, match=match):
        TrainConfig(**kw)


def test_fp16_training_on_the_cpu_is_refused(folder):
    split = make_split(image_backend(), open_image_folder(folder), stream=False)
    with pytest.raises(InputError, match=r"fp16 only on a CUDA device, got device 'cpu'; use "
                                         r"--precision bf16 or fp32 there"):
        train(split, TrainConfig(**{**CFG.__dict__, "precision": "fp16"}))


@pytest.mark.parametrize("argv,match", [
    (["--precision", "fp16"], "tscope: error: Expected --precision fp16 only on a CUDA device"),
    (["--num-workers", "-1"], "tscope: error: Expected num_workers >= 0"),
])
def test_cli_refuses_bad_loading_options_in_one_line(tmp_path, folder, capsys, argv, match):
    net = tmp_path / "net.py"
    net.write_text("from torch import nn\n"
                   "def build():\n"
                   "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), "
                   "nn.Flatten(), nn.Linear(4, 2)), {'size': 16, 'mean': (0.5,) * 3, "
                   "'std': (0.25,) * 3}\n")
    finetune = ["finetune", *FAST_FINETUNE, "--no-db", "--epochs", "1", "--seeds", "1",
                "--strategy", "full"]
    for cmd in (finetune, ["rank"]):
        code = main([*cmd, "--data", str(folder), "--model", f"torch:{net}:build",
                     "--device", "cpu", "--cache-dir", str(tmp_path / "c"), *argv]
                    if cmd[0] == "rank" else
                    [*cmd, "--data", str(folder), "--model", f"torch:{net}:build",
                     "--device", "cpu", *argv])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith(match) and "\n" not in err, err


def test_cli_passes_precision_and_workers_to_the_configs(tmp_path, folder, capsys):
    from transferscope import cli

    seen = {}

    def fake_finetune(data, model, strategy, **kw):
        seen.update(kw["config"].__dict__)
        raise InputError("Expected nothing; stop")

    import transferscope.finetune as ft
    original = ft.finetune
    ft.finetune = fake_finetune
    try:
        cli.main(["finetune", *FAST_FINETUNE, "--data", str(folder), "--model", "x", "--no-db",
                  "--precision", "bf16", "--num-workers", "2"])
    finally:
        ft.finetune = original
    assert seen["precision"] == "bf16" and seen["num_workers"] == 2
