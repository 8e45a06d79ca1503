"""The one way results become pandas DataFrames (``to_frame()`` on finetune results, training
histories, learning curves, run stores and study evaluations).

pandas is optional (the ``tables`` extra): it is imported when a frame is asked for, and its
absence is one line naming the extra to install.
"""

from __future__ import annotations

from transferscope.errors import require


def pandas():
    """The pandas module, or a one-line :class:`~transferscope.errors.OptionalDependencyError`
    naming ``pip install 'transferscope[tables]'``."""
    return require("pandas", "tables", "to_frame()")


def frame(rows: list[dict], columns=None, **attrs):
    """A DataFrame of ``rows`` (one row per dict; missing keys are NaN).

    Parameters
    ----------
    rows : list of dict, length n_rows
        The rows.
    columns : sequence of str, optional
        Columns that come first, in this order (present even when ``rows`` is empty); the
        other keys follow in the order they first appear.
    **attrs
        Stored in ``DataFrame.attrs`` (values that belong to the whole table).

    Returns
    -------
    pandas.DataFrame of shape (n_rows, n_columns)
    """
    pd = pandas()
    order = list(columns or [])
    seen = set(order)
    for row in rows:
        for k in row:
            if k not in seen:
                seen.add(k)
                order.append(k)
    out = pd.DataFrame(rows, columns=order)
    out.attrs.update(attrs)
    return out
