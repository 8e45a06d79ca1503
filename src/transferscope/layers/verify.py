"""Check a recommendation by fine-tuning it against alternatives on the same split and seeds.

Configurations (each trained for ``seeds`` seeds; model selection on validation only):

- recommended: the recommended cut, freeze depth, head width and strategy;
- full fine-tuning: the whole model (no cut), every parameter trains, linear head;
- linear probe at the last layer: the whole model frozen, a linear head on its default layer;
- nothing frozen: the recommended cut and head width, every parameter trains.

For each alternative: test accuracy (mean, 95 % t interval over seeds), parameter counts,
training time, and the recommended minus alternative accuracy with its paired interval
(:func:`transferscope.verdict.paired_gain`); the recommendation *beat* it (interval above 0),
*matched* it (interval spans 0) or did *worse* (interval below 0). An alternative identical to
the recommendation (e.g. "nothing frozen" when full fine-tuning is recommended) is not trained
twice.
"""

from __future__ import annotations

import numpy as np

from transferscope.config import DEFAULT_SEEDS, TrainConfig, training_run
from transferscope.data import Dataset
from transferscope.finetune.run import (
    check_seeds,
    default_split,
    finetunable_backend,
    heldout_fingerprints,
    make_split,
    run_or_reuse,
)
from transferscope.layers.recommend import Recommendation
from transferscope.store import RunStore, open_store
from transferscope.verdict import interval_label, mean_ci, paired_gain

OUTCOMES = ("beat", "worse", "matched")


def configurations(rec: Recommendation, backend, epochs: int) -> list[dict]:
    """The recommendation and its three alternatives, as training configurations."""
    options = dict(rec.strategy_options)
    if rec.strategy == "lp_ft":  # the probe stage must leave epochs to fine-tune
        options["probe_epochs"] = min(options.get("probe_epochs", 5), max(1, epochs // 4))
    if rec.strategy == "freeze":
        options["k"] = rec.freeze
    last = backend.default_layer()
    return [
        {"name": "recommended", "layer": rec.cut, "cut": True, "head_width": rec.head_width,
         "strategy": rec.strategy, "options": options},
        {"name": "full fine-tuning", "layer": last, "cut": False, "head_width": 0,
         "strategy": "full", "options": {}},
        {"name": "linear probe, last layer", "layer": last, "cut": False, "head_width": 0,
         "strategy": "linear_probe", "options": {}},
        {"name": "nothing frozen", "layer": rec.cut, "cut": True, "head_width": rec.head_width,
         "strategy": "full", "options": {}},
    ]


def verify(data: Dataset, model, rec: Recommendation, *, seeds: int = DEFAULT_SEEDS,
           config: TrainConfig | None = None, split_seed: int = 0,
           lr: float | None = None, backbone_lr: float | None = None,
           store: RunStore | None = None, val_data: Dataset | None = None,
           test_data: Dataset | None = None) -> list[dict]:
    """Fine-tune the recommendation and three alternatives on one split with the same seeds.

    Parameters
    ----------
    data : Dataset
        The target.
    model : str or FinetunableBackend
        The model the recommendation is for.
    rec : Recommendation
        From :func:`transferscope.layers.recommend`.
    seeds : int
        Runs per configuration.
    config : TrainConfig, optional
        Training settings.
    split_seed : int
        Seed of the 60/20/20 split.
    lr, backbone_lr : float, optional
        Learning rates for every configuration.
    store : RunStore, optional
        Where runs are recorded and reused (default: in memory).
    val_data, test_data : Dataset, optional
        A separate validation / test set used as it is (the test set reaches neither
        training nor selection); the rest comes from a stratified split of ``data``.

    Returns
    -------
    list of dict
        One row per configuration: test accuracy with its t interval, parameter counts,
        training time; for the alternatives, the recommended minus alternative accuracy
        (``rec_gain`` with its paired interval) and ``recommendation``: beat,
        matched or worse. A configuration identical to an earlier one (the same run
        identities) is not trained twice and says ``same_as``.
    """
    check_seeds(seeds)
    cfg = config or TrainConfig()
    store = store if store is not None else open_store(None)
    backend = finetunable_backend(model, data)
    split = make_split(backend, data, split_seed, val_data=val_data, test_data=test_data,
                       num_workers=cfg.num_workers)
    fingerprint = data.fingerprint
    held = {"split": default_split(val_data is not None, test_data is not None),
            **heldout_fingerprints(val_data, test_data)}
    lrs = {k: v for k, v in (("lr", lr), ("backbone_lr", backbone_lr)) if v is not None}
    rows, correct, done = [], {}, {}
    for c in configurations(rec, backend, cfg.epochs):
        options = {**c["options"], **lrs}
        configs = [training_run(backend, fingerprint, c["strategy"], options, cfg,
                                seed=cfg.seed + s, layer=c["layer"], cut=c["cut"],
                                head_width=c["head_width"], split_seed=split_seed, **held)
                   for s in range(seeds)]
        same = tuple(rc.key() for rc in configs)
        if same in done:  # identical to an earlier configuration: same runs, same result
            first = done[same]
            correct[c["name"]] = correct[first["config"]]
            rows.append(dict(first, config=c["name"], same_as=first["config"]))
            continue
        runs = [run_or_reuse(store, backend, split, rc, device=cfg.device,
                             tags={"verify": c["name"], "target": data.name,
                                   "source": backend.name}) for rc in configs]
        correct[c["name"]] = np.stack([np.asarray(r.metrics["test_correct"]) for r in runs])
        mean, lo, hi = mean_ci([r.metrics["test_acc"] for r in runs], bounds=(0.0, 1.0))
        rows.append({"config": c["name"], "layer": c["layer"], "cut": c["cut"],
                     "head_width": c["head_width"], "strategy": c["strategy"],
                     "test_acc": mean, "ci_lo": lo, "ci_hi": hi,
                     "params": runs[-1].metrics["params"],
                     "trainable_params": runs[-1].metrics["trainable_params"],
                     "train_s": float(np.mean([r.wall_s for r in runs]))})
        done[same] = rows[-1]
    rec_correct = correct["recommended"]
    for row in rows[1:]:
        g, lo, hi = paired_gain(rec_correct, correct[row["config"]])
        row.update(rec_gain=g, rec_gain_lo=lo, rec_gain_hi=hi,
                   recommendation=interval_label(lo, hi, 0.0, OUTCOMES))
    return rows
