"""Plain-text tables, JSON and CSV of result rows (lists of dicts): what the CLI prints.

(The HTML study report is :mod:`transferscope.study.report`.)
"""

from __future__ import annotations

import csv
import io
import json
import math

FORMATS = ("table", "json", "csv")


def _cell(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.6g}"
    return "" if v is None else str(v)


def json_safe(obj):
    """``obj`` with non-finite floats made JSON-valid: NaN -> ``None``, +-inf -> ``"inf"`` /
    ``"-inf"`` (strict JSON has neither), recursively through dicts, lists and tuples."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy scalars
        return json_safe(obj.item())
    return obj


def to_json(obj, **kw) -> str:
    """Strict JSON of ``obj`` (see :func:`json_safe`); other objects as ``str``."""
    return json.dumps(json_safe(obj), allow_nan=False, default=str, **kw)


def render(rows: list[dict], fmt: str = "table") -> str:
    """Result rows as text in one of :data:`FORMATS`.

    Parameters
    ----------
    rows : list of dict
        One dict per row; the columns are the union of the keys, in first-seen order (a row
        without a key gets an empty cell).
    fmt : {"table", "json", "csv"}
        ``"table"``: aligned plain-text columns, floats to 6 significant digits; ``"json"``: an
        indented JSON list (non-JSON values as str); ``"csv"``: a header line and one line per row.

    Returns
    -------
    str
        Without a trailing newline.
    """
    if fmt == "json":
        return to_json(rows, indent=2)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([line, sep, *body])
