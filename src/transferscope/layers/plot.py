"""The layer profile as a figure (PNG and SVG): normalised transferability per layer with the
consensus, and the primary metric against the random twin with the debiased linear CKA."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferscope.errors import require
from transferscope.layers.profile import LayerProfile


def plot_profile(profile: LayerProfile, out_dir, *, cut: str | None = None,
                 stem: str = "layer_profile") -> list[Path]:
    """Write the layer profile as ``<stem>.png`` and ``<stem>.svg`` in ``out_dir``.

    Made without pyplot, so a notebook user's backend is left alone.

    Returns
    -------
    list of Path
        The two files.
    """
    require("matplotlib", "plot", "layer-profile plots")
    from matplotlib.figure import Figure

    layers = [r["layer"] for r in profile.rows]
    x = np.arange(len(layers))
    fig = Figure(figsize=(max(6, 0.45 * len(layers) + 2), 6.5), layout="constrained")
    a, b = fig.subplots(2, 1, sharex=True)
    for m in profile.metrics:
        v = profile.column(m)
        span = np.nanmax(v) - np.nanmin(v)
        a.plot(x, (v - np.nanmin(v)) / span if span else v * 0, marker=".", lw=1, label=m)
    a.plot(x, profile.column("score"), color="black", lw=2.5, label="consensus")
    a.set_ylabel("normalised over layers")
    name = profile.model if len(profile.model) <= 48 else "..." + profile.model[-45:]
    a.set_title(f"{name} on {profile.data} ({profile.n_samples} training samples)", fontsize=9)
    p = profile.primary
    b.plot(x, profile.column(p), marker="o", label=f"{p} (pretrained)")
    b.plot(x, profile.column(f"random_{p}"), marker="o", ls="--", label=f"{p} (random twin)")
    b.plot(x, profile.column("cka_random"), marker="s", color="grey",
           label="debiased linear CKA to random twin")
    b.set_ylabel("value")
    b.set_xticks(x, layers, rotation=60, ha="right", fontsize=8)
    for ax in (a, b):
        if cut in layers:
            ax.axvline(layers.index(cut), color="red", ls=":", label="recommended cut")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    for path in paths:
        fig.savefig(path, dpi=120)
    return paths
