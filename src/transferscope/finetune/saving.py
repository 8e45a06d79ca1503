"""Saved models: ``model.safetensors`` (backbone + head), ``config.json`` (everything needed to
rebuild it: the model name, and the run's :class:`~transferscope.config.RunConfig`, with the
package version) and ``README.md``, a model card with the verdict."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from transferscope.backends import create_backend
from transferscope.config import RunConfig
from transferscope.errors import InputError
from transferscope.finetune.model import TransferModel, make_head


def save_model(model: TransferModel, directory, *, classes, model_name: str,
               run: RunConfig | None = None, verdict: dict | None = None) -> Path:
    """Write ``model`` to ``directory`` (created): safetensors, config.json, model card.

    Parameters
    ----------
    model : TransferModel
        A trained model.
    directory : path
        Output folder.
    classes : sequence
        Label value of each output, in order.
    model_name : str
        The model name the backbone was built from (to rebuild it).
    run : RunConfig, optional
        The run that trained it (recorded in config.json).
    verdict : dict, optional
        ``arms``, ``gain``, ``verdict``, ``rule`` (and optionally ``power``, the verdict's
        power statement, and ``lr_scale``, this run's learning-rate multiplier) for the model
        card.

    Returns
    -------
    Path
        The folder.
    """
    from safetensors.torch import save_file

    from transferscope import __version__

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    pre = getattr(model.backend, "preprocessing", None)
    config = {"transferscope_version": __version__, "model": model_name, "layer": model.layer,
              # the backbone's input preparation as trained (declared, or overridden by
              # --input-size/--mean/--std): the rebuilt model prepares inputs the same way
              "preprocessing": asdict(pre) if pre is not None else None,
              "head_width": model.head_width, "n_outputs": model.n_outputs,
              "cut": model.cut,
              "classes": [str(c) for c in classes],
              "run": run.to_dict() if run is not None else None,
              "verdict": verdict or {}}
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    lines = [f"# {model_name} fine-tuned with transferscope {__version__}", "",
             f"- features from layer `{model.layer}`, head width {model.head_width or 'linear'}, "
             f"{model.n_outputs} classes: {', '.join(config['classes'][:20])}",
             (f"- training: strategy `{run.strategy}` "
              f"`{json.dumps(run.strategy_config, sort_keys=True)}`, seed {run.seed}, "
              f"`{json.dumps(run.train, sort_keys=True)}`" if run is not None else
              "- training: not recorded")]
    if verdict:
        lines += ["", "## Transfer vs scratch", "",
                  "| arm | strategy | test accuracy | 95% CI |", "|---|---|---|---|"]
        lines += [f"| {a['arm']} | {a['strategy']} | {a['test_acc']:.4f} | "
                  f"[{a['ci_lo']:.4f}, {a['ci_hi']:.4f}] |" for a in verdict.get("arms", [])]
        g = verdict.get("gain")
        if g:
            lines += ["", f"Gain {g[0]:+.4f} (95% CI [{g[1]:+.4f}, {g[2]:+.4f}]): "
                          f"**{verdict.get('verdict')}**. {verdict.get('rule', '')}"]
        if verdict.get("power"):
            lines += ["", f"Evidence: {verdict['power']}."]
        if verdict.get("lr_scale") is not None:
            lines += ["", f"This model's learning rates: the strategy's times "
                          f"{verdict['lr_scale']:g}, chosen on validation."]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return out


def load_model(directory) -> tuple[TransferModel, dict]:
    """Rebuild a saved model (weights loaded from safetensors only).

    Returns
    -------
    tuple of (TransferModel, dict)
        The model in eval mode and its config.json (``run`` rebuilt as a
        :class:`RunConfig`).
    """
    from safetensors.torch import load_file

    d = Path(directory)
    if not (d / "config.json").exists() or not (d / "model.safetensors").exists():
        raise InputError(f"Expected config.json and model.safetensors in {d}, got "
                         f"{sorted(p.name for p in d.iterdir()) if d.exists() else 'no folder'}")
    config = json.loads((d / "config.json").read_text())
    backend = create_backend(config["model"])
    if config.get("preprocessing") and getattr(backend, "accepts_preprocessing", False):
        backend = backend.with_preprocessing(**config["preprocessing"])
    model = TransferModel(backend, config["n_outputs"],
                          layer=config["layer"], head_width=config["head_width"],
                          cut=config.get("cut", False))
    state = load_file(str(d / "model.safetensors"))
    key = "head.0.weight" if model.head_width else "head.weight"  # gives the head's input width
    if key not in state:
        raise InputError(f"Expected {key} in {d / 'model.safetensors'}, got a different model")
    n_features = state[key].shape[1]
    model.n_features = n_features
    model.head = make_head(n_features, model.head_width, model.n_outputs)
    model.load_state_dict(state, strict=True)
    if config.get("run"):
        config["run"] = RunConfig.from_dict(config["run"])
    return model.eval(), config
