"""Check a recommendation by fine-tuning it against alternatives on the same split and seeds.

Configurations (each trained for ``seeds`` seeds; model selection on validation only):

- recommended: the recommended cut, freeze depth, head width and strategy;
- full fine-tuning: the whole model (no cut), every parameter trains, linear head;
- linear probe at the last layer: the whole model frozen, a linear head on its default layer;
- nothing frozen: the recommended cut and head width, every parameter trains.

For each alternative: test accuracy (mean, 95 % t interval over seeds), parameter counts,
training time, and the recommended minus alternative accuracy with the paired two-level
bootstrap; the recommendation *beat* it (interval above 0), *matched* it (interval spans 0)
or did *worse* (interval below 0). An alternative identical to the recommendation (e.g.
"nothing frozen" when full fine-tuning is recommended) is not trained twice.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from transferscope.data import Dataset
from transferscope.finetune.run import (
    correct_on,
    finetunable_backend,
    make_split,
    train_on_split,
)
from transferscope.finetune.trainer import TrainConfig
from transferscope.layers.recommend import Recommendation
from transferscope.verdict import mean_ci, paired_gain

OUTCOME = {True: "beat", False: "worse", None: "matched"}


def configurations(rec: Recommendation, backend, epochs: int) -> list[dict]:
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


def verify(data: Dataset, model, rec: Recommendation, *, seeds: int = 3,
           config: TrainConfig | None = None, split_seed: int = 0,
           lr: float | None = None, backbone_lr: float | None = None) -> list[dict]:
    cfg = config or TrainConfig()
    backend = finetunable_backend(model, data)
    split = make_split(backend, data, split_seed)
    lrs = {k: v for k, v in (("lr", lr), ("backbone_lr", backbone_lr)) if v is not None}
    rows, correct, done = [], {}, {}
    for c in configurations(rec, backend, cfg.epochs):
        same = json.dumps({k: v for k, v in c.items() if k != "name"}, sort_keys=True)
        if same in done:  # identical to an earlier configuration: same seeds, same result
            first = done[same]
            correct[c["name"]] = correct[first["config"]]
            rows.append(dict(first, config=c["name"], same_as=first["config"]))
            continue
        per_seed, walls, n_params, n_train = [], [], 0, 0
        for s in range(seeds):
            net, hist = train_on_split(backend, split, c["strategy"], {**c["options"], **lrs},
                                       dataclasses.replace(cfg, seed=cfg.seed + s),
                                       layer=c["layer"], head_width=c["head_width"],
                                       cut=c["cut"])
            per_seed.append(correct_on(net, split.test))
            walls.append(hist.wall_s)
            n_params, n_train = net.n_parameters(), hist.trainable_params
        correct[c["name"]] = np.stack(per_seed)
        mean, lo, hi = mean_ci([p.mean() for p in per_seed])
        rows.append({"config": c["name"], "layer": c["layer"], "cut": c["cut"],
                     "head_width": c["head_width"], "strategy": c["strategy"],
                     "test_acc": mean, "ci_lo": lo, "ci_hi": hi, "params": n_params,
                     "trainable_params": n_train, "train_s": float(np.mean(walls))})
        done[same] = rows[-1]
    rec_correct = correct["recommended"]
    for row in rows[1:]:
        g, lo, hi = paired_gain(rec_correct, correct[row["config"]])
        row.update(rec_gain=g, rec_gain_lo=lo, rec_gain_hi=hi,
                   recommendation=OUTCOME[True if lo > 0 else False if hi < 0 else None])
    return rows
