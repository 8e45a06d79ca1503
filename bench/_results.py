"""Shared by the bench scripts: write a result as JSON under bench/results/."""

import json
from pathlib import Path


def write_json(path, payload) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {out}")
    return out
