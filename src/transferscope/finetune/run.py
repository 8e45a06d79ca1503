"""Transfer vs scratch on one dataset: splits, both arms over seeds, the store, the verdict."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from transferscope.backends import create_backend
from transferscope.data import Dataset, stratified_split
from transferscope.data.splits import subsample_indices
from transferscope.errors import InputError
from transferscope.finetune.model import TransferModel
from transferscope.finetune.saving import save_model
from transferscope.finetune.strategies import make_strategy
from transferscope.finetune.trainer import TrainConfig, fit, predict
from transferscope.verdict import (
    VERDICT_RULE,
    mean_ci,
    negative_transfer_verdict,
    paired_gain,
)


@dataclass
class FinetuneResult:
    arms: list[dict]
    gain: tuple[float, float, float]
    verdict: str
    rule: str
    histories: dict
    target_acc: float = float("nan")  # validation accuracy the time-to-target refers to
    time_saved_s: float = float("nan")  # baseline's time to target minus transfer's


def _tensors(backend, data: Dataset, idx) -> tuple:
    sub = data.subset(idx)
    _, codes = np.unique(data.labels, return_inverse=True)
    x = torch.cat([backend.prepare(sub.inputs[i : i + 256], sub) for i in range(0, len(sub), 256)])
    return x, torch.as_tensor(codes.reshape(-1)[idx])


def finetunable_backend(model, data: Dataset):
    """The backend for ``model`` (a name or a backend), checked to train on ``data``."""
    backend = create_backend(model) if isinstance(model, str) else model
    if not getattr(backend, "finetunable", False):
        raise InputError(f"Expected a model whose weights can train, got {backend.name!r}; "
                         "effnet-lite, hf:, torch:, timm: and torchvision: models can be "
                         "fine-tuned")
    backend.check_input(data)
    return backend


@dataclass
class Split:
    """Model-ready (x, y) tensors of the stratified 60/20/20 train/validation/test split."""

    train: tuple
    val: tuple
    test: tuple
    classes: np.ndarray
    idx: tuple  # (train, val, test) indices into the dataset


def make_split(backend, data: Dataset, split_seed: int = 0,
               train_fraction: float = 1.0) -> Split:
    train_idx, val_idx, test_idx = stratified_split(data.labels, seed=split_seed)
    if train_fraction != 1.0:  # fewer training samples; validation and test stay the same
        train_idx = train_idx[subsample_indices(data.labels[train_idx],
                                                fraction=train_fraction, seed=split_seed)]
    tr, va, te = (_tensors(backend, data, i) for i in (train_idx, val_idx, test_idx))
    return Split(tr, va, te, np.unique(data.labels), (train_idx, val_idx, test_idx))


def train_on_split(backend, split: Split, strategy: str, options: dict, config: TrainConfig, *,
                   layer: str | None = None, head_width: int = 0, cut: bool = False,
                   on_epoch=None):
    """One run: a fresh model (backbone at ``layer`` + new head) trained with ``strategy`` on
    the split's training part, selected on its validation part; returns (model, history)."""
    net = TransferModel(backend, len(split.classes), layer=layer, head_width=head_width,
                        cut=cut)
    hist = fit(net, make_strategy(strategy, **options), split.train, split.val, config,
               on_epoch=on_epoch)
    return net, hist


def run_metrics(net, hist, correct) -> dict:
    """What the run store keeps of one finished run (everything a verdict, a learning curve or
    a time-to-target needs later, without the model)."""
    return {"test_acc": float(correct.mean()), "test_correct": correct.tolist(),
            "best_epoch": hist.best_epoch, "val_acc": hist.best_val_acc, "gap": hist.gap,
            "best_s": hist.best_s, "val_curve": hist.val_curve,
            "params": net.n_parameters(), "trainable_params": hist.trainable_params}


def correct_on(net, test_xy) -> np.ndarray:
    """1 where the model's prediction on a test sample is right, else 0."""
    return (predict(net, test_xy[0]).argmax(1) == test_xy[1]).numpy().astype(int)


def finetune(data: Dataset, model: str, strategy: str = "lp_ft", *, baseline: str = "scratch",
             seeds: int = 3, config: TrainConfig | None = None, strategy_options=None,
             baseline_options=None, layer: str | None = None, split_seed: int = 0,
             store=None, margin: float = 0.0, save_dir=None,
             train_fraction: float = 1.0, target_acc: float | None = None,
             head_width: int = 0, cut: bool = False) -> FinetuneResult:
    """Fine-tune ``model`` on ``data`` with ``strategy`` and train the ``baseline`` arm
    (default: the same architecture from scratch) for ``seeds`` seeds each; test accuracy of
    both arms (model selection used the validation split only) and the verdict. With
    ``save_dir``, the transfer seed with the best validation accuracy is saved there
    (safetensors + config + model card with the verdict). ``cut`` truncates the backbone
    after ``layer``; ``head_width`` > 0 puts a hidden layer in the head (both arms alike).

    Training time: ``train_s`` is the mean wall time of a run (early-stopping patience
    included), ``best_s`` the time until its selected epoch ended, and ``time_to_target_s``
    the median over seeds of the time until validation accuracy first reached
    ``target_acc`` (default: the lowest best validation accuracy of all runs, a level every
    run reached); ``inf`` when most seeds never reached it. ``time_saved_s`` on the
    result is scratch's time to target minus transfer's."""
    cfg = config or TrainConfig()
    backend = finetunable_backend(model, data)
    split = make_split(backend, data, split_seed, train_fraction)
    te, classes, train_idx = split.test, split.classes, split.idx[0]
    # hashed once, not per run: the dataset's content and the model's weights
    fingerprint, identity = data.fingerprint, backend.identity()
    arms = {"transfer": (strategy, strategy_options or {}),
            baseline: (baseline, baseline_options or {})}
    correct, rows, histories, curves, walls, params = {}, [], {}, {}, {}, {}
    best_transfer = None  # (val_acc, model or None when reused, seed, record)

    def train_one(name, options, run_cfg, log=None):
        return train_on_split(backend, split, name, options, run_cfg, layer=layer,
                              head_width=head_width, cut=cut, on_epoch=log)

    for arm, (name, options) in arms.items():
        correct[arm], curves[arm], walls[arm] = [], [], []
        for s in range(seeds):
            run_cfg = dataclasses.replace(cfg, seed=cfg.seed + s)
            record = {"data": fingerprint, "model": identity, "arm": arm,
                      "strategy": name, "options": options, "layer": layer,
                      "head_width": head_width, "cut": cut,
                      "train": dataclasses.asdict(run_cfg), "split_seed": split_seed,
                      "train_fraction": train_fraction}
            handle = store.start(record, run_cfg.seed) if store is not None else None
            if store is not None and handle is None:  # finished before: reuse, never redo
                done = store.find(record, run_cfg.seed)
                m = done["metrics"]
                correct[arm].append(np.asarray(m["test_correct"]))
                curves[arm].append([tuple(p) for p in m["val_curve"]])
                walls[arm].append((done["timings"] or {}).get("wall_s", float("nan")))
                params[arm] = (m.get("params"), m.get("trainable_params"))
                if arm == "transfer" and (best_transfer is None or
                                          m["val_acc"] > best_transfer[0]):
                    best_transfer = (m["val_acc"], None, run_cfg, record)
                continue
            log = None if handle is None else (lambda row, h=handle: store.log_epoch(
                h, row["epoch"], row))
            try:
                net, hist = train_one(name, options, run_cfg, log)
                ok = correct_on(net, te)
            except BaseException as exc:  # interrupted or failed: never left "running"
                if handle is not None:
                    store.fail(handle, f"{type(exc).__name__}: {exc}")
                raise
            correct[arm].append(ok)
            curves[arm].append(hist.val_curve)
            walls[arm].append(hist.wall_s)
            params[arm] = (net.n_parameters(), hist.trainable_params)
            histories[(arm, s)] = hist
            if arm == "transfer" and (best_transfer is None or
                                      hist.best_val_acc > best_transfer[0]):
                best_transfer = (hist.best_val_acc, net, run_cfg, record)
            if handle is not None:
                store.finish(handle, run_metrics(net, hist, ok),
                             timings={"wall_s": hist.wall_s})
        accs = [c.mean() for c in correct[arm]]
        mean, lo, hi = mean_ci(accs)
        rows.append({"arm": arm, "strategy": name, "test_acc": mean, "ci_lo": lo, "ci_hi": hi,
                     "seeds": seeds, "n_train": len(train_idx),
                     "params": params[arm][0], "trainable_params": params[arm][1],
                     "train_s": float(np.mean(walls[arm])),
                     "best_s": float(np.mean([_best_time(c) for c in curves[arm]]))})
    if target_acc is None:  # the best validation accuracy that every run reached
        target_acc = min(max(a for _, a in c) for arm in arms for c in curves[arm])
    for row in rows:
        row["time_to_target_s"] = time_to_target(curves[row["arm"]], target_acc)
    gain = paired_gain(np.stack(correct["transfer"]), np.stack(correct[baseline]))
    result = FinetuneResult(arms=rows, gain=gain,
                            verdict=negative_transfer_verdict(gain[1], gain[2], margin),
                            rule=VERDICT_RULE.format(m=margin), histories=histories,
                            target_acc=target_acc,
                            time_saved_s=rows[1]["time_to_target_s"] - rows[0]["time_to_target_s"])
    if save_dir is not None:
        _, net, run_cfg, record = best_transfer
        if net is None:  # reused from the store: retrain that seed (same seed, same model)
            net, _ = train_one(strategy, strategy_options or {}, run_cfg)
        path = save_model(net, save_dir, classes=classes, model_name=model,
                          training={"strategy": strategy, "options": strategy_options or {},
                                    "seed": run_cfg.seed, "layer": layer,
                                    **dataclasses.asdict(cfg)},
                          verdict={"arms": rows, "gain": gain, "verdict": result.verdict,
                                   "rule": result.rule})
        if store is not None:
            store.set_artifacts(record, run_cfg.seed, {"model_dir": str(path.resolve())})
    return result



def _best_time(curve) -> float:
    """Seconds until the first epoch with the best validation accuracy ended."""
    best = max(a for _, a in curve)
    return next(t for t, a in curve if a == best)


def time_to_target(curves, target: float) -> float:
    """Median over runs of the seconds until validation accuracy first reached ``target``
    (``inf`` for a run that never did, so the median is ``inf`` when most never did)."""
    times = [next((t for t, a in c if a >= target - 1e-12), float("inf")) for c in curves]
    return float(np.median(times))


def learning_curves(data: Dataset, model: str, strategy: str = "lp_ft", *,
                    fractions=(0.05, 0.1, 0.25, 0.5, 1.0), **kw) -> dict:
    """Both arms at each fraction of the training split; break-even and data saved.

    - break-even fraction: the first fraction at which scratch's mean test accuracy reaches
      transfer's (linear interpolation of the gain between fractions), if it does;
    - data saved at fraction f: how much more training data scratch needs to match transfer's
      accuracy at f, as a ratio (scratch's running-best curve, interpolated); ``inf`` when
      scratch never gets there within the fractions tried;
    - training time saved at fraction f, likewise in seconds: the training time (to the
      selected epoch) scratch needs to match transfer's accuracy at f, interpolated on scratch's
      running-best accuracy-vs-time curve over the fractions, minus transfer's own time at f.
    """
    fractions = sorted(float(f) for f in fractions)
    points = []
    for f in fractions:
        res = finetune(data, model, strategy, train_fraction=f, **kw)
        t, s = res.arms
        points.append({"fraction": f, "n_train": t["n_train"], "transfer_acc": t["test_acc"],
                       "scratch_acc": s["test_acc"], "gain": res.gain[0],
                       "gain_lo": res.gain[1], "gain_hi": res.gain[2], "verdict": res.verdict,
                       "transfer_best_s": t["best_s"], "scratch_best_s": s["best_s"]})
    return summarise_curves(points)


def summarise_curves(points: list[dict]) -> dict:
    """Break-even fraction, data saved and training time saved from per-fraction points
    (``fraction``, ``gain``, ``transfer_acc``, ``scratch_acc``, ``transfer_best_s``,
    ``scratch_best_s``); adds ``data_saved_x`` and ``time_saved_s`` to each point."""
    points = sorted(points, key=lambda p: p["fraction"])
    fractions = [p["fraction"] for p in points]
    gains = [p["gain"] for p in points]
    break_even = None
    for i in range(len(fractions) - 1):
        (f0, g0), (f1, g1) = (fractions[i], gains[i]), (fractions[i + 1], gains[i + 1])
        if g0 > 0 >= g1:
            break_even = f0 + (f1 - f0) * g0 / (g0 - g1)
            break
    scratch_best = np.maximum.accumulate([p["scratch_acc"] for p in points])
    # scratch's accuracy against its training time (to the selected epoch), running best
    by_time = sorted((p["scratch_best_s"], p["scratch_acc"]) for p in points)
    times = [t for t, _ in by_time]
    time_best = np.maximum.accumulate([a for _, a in by_time])
    for p in points:
        need = _inverse(fractions, scratch_best, p["transfer_acc"])
        p["data_saved_x"] = need / p["fraction"] if need is not None else float("inf")
        need_s = _inverse(times, time_best, p["transfer_acc"])
        p["time_saved_s"] = (need_s - p["transfer_best_s"]) if need_s is not None else float("inf")
    return {"points": points, "break_even_fraction": break_even}


def _inverse(xs, ys, target):
    """Smallest x at which the non-decreasing curve ys reaches target (interpolated)."""
    for i, y in enumerate(ys):
        if y >= target:
            if i == 0:
                return xs[0]
            return xs[i - 1] + (xs[i] - xs[i - 1]) * (target - ys[i - 1]) / (y - ys[i - 1])
    return None
