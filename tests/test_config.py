"""The one run identity: RunConfig round trips, keys, and what enters them."""

import dataclasses
import json

import pytest

from transferscope import InputError
from transferscope.config import RunConfig, TrainConfig, training_run
from transferscope.finetune import strategies


class _Backend:
    def identity(self):
        return "m|w=1|p=2"

    def architecture(self):
        return "arch=Net|shapes=3|p=2"

    def default_layer(self):
        return "act2"


def _run(strategy="full", options=None, **kw):
    return training_run(_Backend(), "fp", strategy, options, TrainConfig(), seed=0, **kw)


def test_round_trip_through_json_is_the_identity():
    rc = _run("lora", {"target_modules": ("q", "v")}, fraction=0.5, cut=True, head_width=8)
    again = RunConfig.from_dict(json.loads(json.dumps(rc.to_dict())))
    assert again == rc and again.key() == rc.key()
    assert rc.layer == "act2" and rc.strategy_config["target_modules"] == ["q", "v"]


def test_unknown_keys_from_a_newer_version_are_warned_and_dropped():
    d = dict(_run().to_dict(), from_the_future=1)
    with pytest.warns(UserWarning, match="from_the_future"):
        assert RunConfig.from_dict(d) == _run()


def test_the_key_covers_every_field_but_not_the_device():
    base = _run()
    for change in ({"seed": 1}, {"fraction": 0.5}, {"layer": "blocks.3"}, {"cut": True},
                   {"head_width": 4}, {"split_seed": 1}, {"data": "other"}):
        assert base.replace(**change).key() != base.key(), change
    assert _run(options={"lr": 2e-3}).key() != base.key()
    on_gpu = training_run(_Backend(), "fp", "full", None, TrainConfig(device="cuda"), seed=0)
    assert on_gpu.key() == base.key()


def test_a_changed_strategy_default_changes_the_key(monkeypatch):
    before = _run("lp_ft").key()
    field = next(f for f in dataclasses.fields(strategies.LPFT) if f.name == "probe_epochs")
    monkeypatch.setattr(field, "default", 7)
    monkeypatch.setattr(strategies.LPFT.__init__, "__defaults__",
                        tuple(7 if d == 5 else d for d in strategies.LPFT.__init__.__defaults__))
    assert strategies.make_strategy("lp_ft").probe_epochs == 7
    assert _run("lp_ft").key() != before


def test_scratch_runs_are_keyed_by_architecture_not_weights():
    assert _run("scratch").model == "arch=Net|shapes=3|p=2"
    assert _run("full").model == "m|w=1|p=2"


def test_bad_kind():
    with pytest.raises(InputError, match="run kind"):
        RunConfig(kind="nope", data="d", model="m")


def test_the_shared_concepts_import_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, transferscope.data, transferscope.config, transferscope.registry, "
            "transferscope.names\n"
            "heavy = [m for m in ('torch', 'scipy.linalg', 'sklearn', 'transferscope.metrics') "
            "if m in sys.modules]\nassert not heavy, heavy")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr
