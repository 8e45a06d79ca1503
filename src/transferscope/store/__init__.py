"""The run store: one contract (:class:`RunStore`), a database implementation (SQLite by
default, any SQLAlchemy URL) and an in-memory one; atomic, resumable, no duplicates. Runs leave
it as DataFrames (``store.to_frame()``) and for MLflow (:func:`to_mlflow`)."""

from transferscope.store.base import DEFAULT_URL, STATES, Run, RunStore
from transferscope.store.export import ExportResult, to_mlflow
from transferscope.store.memory import MemoryRunStore
from transferscope.store.migrations import SCHEMA_VERSION, upgrade
from transferscope.store.sql import SQLRunStore


def open_store(url: str | None = DEFAULT_URL, **options) -> RunStore:
    """The store at ``url``: a database for a SQLAlchemy URL, memory for ``None``.

    Parameters
    ----------
    url : str or None
        E.g. ``sqlite:///tscope.db`` or ``postgresql://host/db``; ``None`` keeps runs in
        memory (nothing is recorded beyond this process).
    **options
        ``stale_after_s``.

    Returns
    -------
    RunStore
    """
    return MemoryRunStore(**options) if url is None else SQLRunStore(url, **options)


__all__ = ["DEFAULT_URL", "ExportResult", "MemoryRunStore", "Run", "RunStore", "SCHEMA_VERSION",
           "SQLRunStore", "STATES", "open_store", "to_mlflow", "upgrade"]
