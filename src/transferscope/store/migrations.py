"""Versioned schema migrations of the database run store: an ordered list of functions.

Each migration takes an open SQLAlchemy connection (inside a transaction) at schema version
``n`` and leaves it at ``n + 1``; :func:`upgrade` runs the missing ones in order, all in one
transaction, so a failed upgrade leaves the database as it was. A store opened on an older
schema refuses to work and names ``tscope db upgrade``; one written by a newer transferscope
is refused as well.

History:

- 1: ``schema_version``, ``runs`` (key, study, state, attempt, config, seed, package version,
  times, metrics, timings, artifacts, error), ``epochs``.
- 2: ``runs.tags`` (names for people: target, source, arm; not part of the key), filled for
  existing runs from the fields of their old config records; ``study_runs`` (a run may
  belong to several studies, each with its own tags), filled from ``runs.study``.
- 3: ``runs.owner`` (host, process id and start time of the process running it), so a run
  whose process is gone restarts at once instead of waiting for its heartbeat to age;
  ``locks`` (named locks with an owner and a heartbeat: one driver per study).
"""

from __future__ import annotations

import json

SCHEMA_VERSION = 3
TAG_FIELDS = ("kind", "target", "source", "arm", "strategy", "train_fraction", "name")


def _v1_to_v2(conn, sa) -> None:
    conn.execute(sa.text("ALTER TABLE runs ADD COLUMN tags TEXT"))
    conn.execute(sa.text("CREATE TABLE study_runs (study VARCHAR(200) NOT NULL, run_id INTEGER "
                         "NOT NULL REFERENCES runs (id), tags TEXT, PRIMARY KEY (study, run_id))"))
    rows = conn.execute(sa.text("SELECT id, study, config FROM runs")).all()
    for run_id, study, config in rows:
        old = json.loads(config) if config else {}
        tags = json.dumps({("fraction" if k == "train_fraction" else k): old[k]
                           for k in TAG_FIELDS if k in old}, sort_keys=True)
        conn.execute(sa.text("UPDATE runs SET tags = :tags WHERE id = :id"),
                     {"tags": tags, "id": run_id})
        if study is not None:
            conn.execute(sa.text("INSERT INTO study_runs (study, run_id, tags) VALUES "
                                 "(:study, :id, :tags)"), {"study": study, "id": run_id,
                                                           "tags": tags})


def _v2_to_v3(conn, sa) -> None:
    conn.execute(sa.text("ALTER TABLE runs ADD COLUMN owner TEXT"))
    conn.execute(sa.text("CREATE TABLE locks (name VARCHAR(200) NOT NULL PRIMARY KEY, "
                         "owner TEXT NOT NULL, heartbeat_at FLOAT NOT NULL)"))


MIGRATIONS = {1: _v1_to_v2, 2: _v2_to_v3}  # from version -> function


def schema_version(conn, sa) -> int | None:
    """The schema version recorded in the database, or ``None`` for an empty database."""
    if not sa.inspect(conn).has_table("schema_version"):
        return None
    rows = conn.execute(sa.text("SELECT version FROM schema_version")).scalars().all()
    return rows[0] if rows else None


def upgrade(url: str) -> tuple[int | None, int]:
    """Bring the store at ``url`` to :data:`SCHEMA_VERSION`.

    Parameters
    ----------
    url : str
        SQLAlchemy URL of the store.

    Returns
    -------
    tuple of (int or None, int)
        The version before (``None``: no store there yet, created now) and after.

    Raises
    ------
    InputError
        For a store written by a newer transferscope, or a URL that does not open.
    """
    from transferscope.errors import InputError
    from transferscope.store.sql import SQLRunStore, connect

    sa, engine = connect(url)
    try:
        with engine.begin() as conn:
            before = _migrate(conn, sa, url)
    except sa.exc.DatabaseError as exc:
        raise InputError(f"Expected a run store (a database) at {url}, got one it cannot open "
                         f"({str(exc.orig or exc).splitlines()[0][:100]}); nothing was "
                         "changed") from None
    SQLRunStore(url)  # creates a store where there was none, and checks the result
    return before, SCHEMA_VERSION


def _migrate(conn, sa, url: str) -> int | None:
    """Run the missing migrations on ``conn``; returns the version before."""
    from transferscope.errors import InputError

    before = schema_version(conn, sa)
    if before is not None and before > SCHEMA_VERSION:
        raise InputError(f"Expected a run store of schema version <= {SCHEMA_VERSION}, got "
                         f"{before} at {url}; it was written by a newer transferscope")
    version = before
    while version is not None and version < SCHEMA_VERSION:
        MIGRATIONS[version](conn, sa)
        version += 1
        conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": version})
    return before
