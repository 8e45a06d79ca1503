"""The run store (SQLite by default, any SQLAlchemy URL): atomic, resumable, no duplicates."""

from transferscope.store.runs import DEFAULT_URL, Run, RunStore, run_key

__all__ = ["DEFAULT_URL", "Run", "RunStore", "run_key"]
