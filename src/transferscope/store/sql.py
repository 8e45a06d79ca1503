"""The database run store: the :class:`~transferscope.store.base.RunStore` contract over any
SQLAlchemy URL: ``sqlite:///tscope.db`` (the default, a local file) or a server database
(``postgresql://...``) when many workers write. After Optuna's RDB storage:

- a ``schema_version`` table, with versioned migrations (:mod:`transferscope.store.migrations`);
  a store of an older version is refused with the command that upgrades it;
- a run is identified by ``run_key`` = :meth:`RunConfig.key`, unique in the table, so a rerun of
  finished work is skipped, never duplicated;
- every write is one transaction; a run killed without cleanup (kill -9) stays ``running``
  with a stale heartbeat, and ``start`` restarts it from scratch (see the contract).
"""

from __future__ import annotations

import json
from contextlib import contextmanager

from transferscope.config import RunConfig
from transferscope.errors import InputError, require
from transferscope.store.base import (
    DEFAULT_URL,
    Run,
    RunStore,
    check_state,
    is_stale,
    refuse_frozen,
    refuse_held,
    refuse_live,
    this_process,
)
from transferscope.store.migrations import SCHEMA_VERSION, schema_version


def connect(url: str):
    """``(sqlalchemy, engine)`` for ``url``, with one-line errors for a bad URL, a missing
    database driver or a missing folder."""
    from pathlib import Path

    from transferscope.errors import OptionalDependencyError

    sa = require("sqlalchemy", "store", "The run store")
    if not isinstance(url, str) or "://" not in url:
        raise InputError(f"Expected a SQLAlchemy URL for the run store, got {url!r}; e.g. "
                         f"--db sqlite:///{url if isinstance(url, str) else 'runs.db'}")
    try:
        engine = sa.create_engine(url, future=True)
    except sa.exc.ArgumentError as exc:
        raise InputError(f"Expected a SQLAlchemy URL for the run store, got {url!r} "
                         f"({str(exc).splitlines()[0][:100]}); e.g. sqlite:///runs.db") from None
    except ModuleNotFoundError as exc:
        raise OptionalDependencyError(
            f"The run store at {url.split('://')[0]}:// needs the database driver "
            f"'{exc.name}', which is not installed; install it (e.g. pip install "
            "psycopg2-binary for postgresql://)") from None
    if engine.dialect.name == "sqlite":
        db = engine.url.database or ""
        db = db[5:] if db.startswith("file:") else db  # a URI filename (?mode=ro&uri=true)
        if db and db != ":memory:" and not Path(db).resolve().parent.is_dir():
            raise InputError(f"Expected an existing folder for the run store {url}, got no "
                             f"folder {Path(db).parent}; create it first")
    return sa, engine


class SQLRunStore(RunStore):
    """Runs in a database at ``url`` (any SQLAlchemy URL; default ``sqlite:///tscope.db``).

    Parameters
    ----------
    url : str
        SQLAlchemy URL; the tables are created in an empty database.
    stale_after_s : float
        As in :class:`~transferscope.store.base.RunStore`.
    """

    def __init__(self, url: str = DEFAULT_URL, *, stale_after_s: float = 600.0):
        super().__init__(stale_after_s=stale_after_s)
        sa, self.engine = connect(url)
        self.sa, self.url = sa, url
        meta = sa.MetaData()
        self.version = sa.Table("schema_version", meta,
                                sa.Column("version", sa.Integer, nullable=False))
        self.runs = sa.Table(
            "runs", meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("run_key", sa.String(64), nullable=False, unique=True),
            sa.Column("study", sa.String(200)),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("attempt", sa.Integer, nullable=False),
            sa.Column("config", sa.Text, nullable=False),
            sa.Column("tags", sa.Text),
            sa.Column("seed", sa.Integer, nullable=False),
            sa.Column("package_version", sa.String(40), nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("heartbeat_at", sa.Float, nullable=False),
            sa.Column("finished_at", sa.Float),
            sa.Column("metrics", sa.Text),
            sa.Column("timings", sa.Text),
            sa.Column("artifacts", sa.Text),
            sa.Column("error", sa.Text),
            sa.Column("owner", sa.Text),
        )
        self.members = sa.Table(
            "study_runs", meta,
            sa.Column("study", sa.String(200), primary_key=True),
            sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
            sa.Column("tags", sa.Text),
        )
        self.locks = sa.Table(
            "locks", meta,
            sa.Column("name", sa.String(200), primary_key=True),
            sa.Column("owner", sa.Text, nullable=False),
            sa.Column("heartbeat_at", sa.Float, nullable=False),
        )
        self.epochs = sa.Table(
            "epochs", meta,
            sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
            sa.Column("epoch", sa.Integer, primary_key=True),
            sa.Column("metrics", sa.Text, nullable=False),
        )
        try:
            self._open(meta, url)
        except sa.exc.DatabaseError as exc:
            raise InputError(
                f"Expected a run store (a database) at {url}, got one it cannot open "
                f"({str(exc.orig or exc).splitlines()[0][:100]}); move the file aside or "
                "pass another --db") from None

    @contextmanager
    def _write(self):
        """A write transaction; a database that refuses the write (read-only file, full disk,
        locked) is a one-line error, and the transaction leaves nothing half-written."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except self.sa.exc.OperationalError as exc:
            raise InputError(
                f"Expected to write the run store at {self.url}, got "
                f"{str(exc.orig or exc).splitlines()[0][:100]!r}; check that the file and its "
                "folder are writable and the disk has space (finished runs are kept)") from None

    def _open(self, meta, url: str) -> None:
        """Check the schema version, creating the schema in a new store. Another process may
        create it between the check and the create (two drivers opening a new store at once):
        what it made is kept, and a create that fails with "already exists" checks again."""
        try:
            self._open_once(meta, url)
        except self.sa.exc.OperationalError as exc:
            if "already exists" not in str(exc.orig or exc):
                raise
            self._open_once(meta, url)

    def _open_once(self, meta, url: str) -> None:
        sa = self.sa
        with self.engine.begin() as conn:
            version = schema_version(conn, sa)
            if version is None:
                meta.create_all(conn)  # tables another process made meanwhile are kept
                if schema_version(conn, sa) is None:  # ... and so is its version row
                    conn.execute(self.version.insert().values(version=SCHEMA_VERSION))
            elif version < SCHEMA_VERSION:
                raise InputError(
                    f"Expected a run store of schema version {SCHEMA_VERSION}, got version "
                    f"{version} at {url}; upgrade it (nothing is lost) with: tscope db upgrade "
                    f"--db {url}"
                )
            elif version > SCHEMA_VERSION:
                raise InputError(
                    f"Expected a run store of schema version {SCHEMA_VERSION}, got version "
                    f"{version} at {url}; it was written by a newer transferscope: upgrade "
                    "transferscope"
                )

    # -- writing ------------------------------------------------------------------------------
    def start(self, config: RunConfig, *, study: str | None = None,
              tags: dict | None = None) -> Run | None:
        """Begin, reuse or restart the run in one transaction; see :meth:`RunStore.start`."""
        from transferscope import __version__

        sa, now, key = self.sa, self.now(), config.key()
        with self._write() as conn:
            row = conn.execute(sa.select(self.runs).where(self.runs.c.run_key == key)).first()
            if row is None:
                res = conn.execute(self.runs.insert().values(
                    run_key=key, study=study, state="running", attempt=1,
                    config=json.dumps(config.to_dict(), sort_keys=True),
                    tags=json.dumps(tags or {}, sort_keys=True, default=str), seed=config.seed,
                    package_version=__version__, created_at=now, heartbeat_at=now,
                    owner=json.dumps(this_process())))
                run_id = res.inserted_primary_key[0]
                self._link(conn, study, run_id, tags)
                return Run(run_id, key, 1)
            self._link(conn, study, row.id, tags)
            if row.state == "finished":
                return None
            if row.state == "running":
                refuse_live(row.id, row.heartbeat_at, now, self.stale_after_s,
                            json.loads(row.owner) if row.owner else None)
            # unfinished (failed, or its owner gone): start again from scratch
            conn.execute(self.epochs.delete().where(self.epochs.c.run_id == row.id))
            conn.execute(self.runs.update().where(self.runs.c.id == row.id).values(
                state="running", attempt=row.attempt + 1, heartbeat_at=now, error=None,
                package_version=__version__, owner=json.dumps(this_process())))
            return Run(row.id, key, row.attempt + 1)

    def _link(self, conn, study: str | None, run_id: int, tags: dict | None) -> None:
        if study is None:
            return
        where = (self.members.c.study == study) & (self.members.c.run_id == run_id)
        text = json.dumps(tags or {}, sort_keys=True, default=str)
        if conn.execute(self.sa.select(self.members.c.tags).where(where)).first() is None:
            conn.execute(self.members.insert().values(study=study, run_id=run_id, tags=text))
        else:
            conn.execute(self.members.update().where(where).values(tags=text))

    def link(self, config: RunConfig, study: str, tags: dict | None = None) -> bool:
        """Add the run to ``study`` with ``tags`` (one transaction); see :meth:`RunStore.link`."""
        with self._write() as conn:
            run_id = conn.execute(self.sa.select(self.runs.c.id).where(
                self.runs.c.run_key == config.key())).scalar()
            if run_id is None:
                return False
            self._link(conn, study, run_id, tags)
            return True

    def _check_running(self, conn, run: Run):
        state = conn.execute(self.sa.select(self.runs.c.state).where(
            self.runs.c.id == run.id)).scalar_one()
        refuse_frozen(run.id, state)

    def log_epoch(self, run: Run, epoch: int, metrics: dict) -> None:
        """Insert one epoch's metrics and refresh the heartbeat; see :meth:`RunStore.log_epoch`."""
        with self._write() as conn:
            self._check_running(conn, run)
            conn.execute(self.epochs.insert().values(run_id=run.id, epoch=epoch,
                                                     metrics=json.dumps(metrics)))
            conn.execute(self.runs.update().where(self.runs.c.id == run.id).values(
                heartbeat_at=self.now()))

    def finish(self, run: Run, metrics: dict, *, timings: dict | None = None,
               artifacts: dict | None = None) -> None:
        """Store the final results and mark the run finished; see :meth:`RunStore.finish`."""
        now = self.now()
        with self._write() as conn:
            self._check_running(conn, run)
            conn.execute(self.runs.update().where(self.runs.c.id == run.id).values(
                state="finished", finished_at=now, heartbeat_at=now,
                metrics=json.dumps(metrics), timings=json.dumps(timings or {}),
                artifacts=json.dumps(artifacts or {})))

    def set_artifacts(self, config: RunConfig, artifacts: dict) -> None:
        """Merge artifact paths into a finished run; see :meth:`RunStore.set_artifacts`."""
        with self._write() as conn:
            row = conn.execute(self.sa.select(self.runs.c.id, self.runs.c.state,
                                              self.runs.c.artifacts).where(
                self.runs.c.run_key == config.key())).first()
            if row is None or row.state != "finished":
                raise InputError(f"Expected a finished run to attach artifacts to, got "
                                 f"{row.state if row else 'no run'}")
            merged = {**(json.loads(row.artifacts) if row.artifacts else {}), **artifacts}
            conn.execute(self.runs.update().where(self.runs.c.id == row.id).values(
                artifacts=json.dumps(merged)))

    def fail(self, run: Run, error: str) -> None:
        """Mark the run failed (error kept to 2,000 characters); see :meth:`RunStore.fail`."""
        with self._write() as conn:
            self._check_running(conn, run)
            conn.execute(self.runs.update().where(self.runs.c.id == run.id).values(
                state="failed", error=error[:2000], heartbeat_at=self.now()))

    def mark_stale(self, older_than_s: float | None = None, *,
                   study: str | None = None) -> int:
        """Fail ``running`` runs without a recent heartbeat; see :meth:`RunStore.mark_stale`."""
        limit = self.now() - (self.stale_after_s if older_than_s is None else older_than_s)
        where = self.runs.c.state == "running"
        if study is not None:
            where = where & (self.runs.c.study == study)
        with self._write() as conn:
            rows = conn.execute(self.sa.select(self.runs.c.id, self.runs.c.owner,
                                               self.runs.c.heartbeat_at).where(where)).all()
            stale = [r.id for r in rows
                     if is_stale(json.loads(r.owner) if r.owner else None, r.heartbeat_at, limit)]
            if stale:
                conn.execute(self.runs.update().where(self.runs.c.id.in_(stale)).values(
                    state="failed", error="its process is gone or its heartbeat stopped"))
            return len(stale)

    # -- locks ---------------------------------------------------------------------------------
    def acquire_lock(self, name: str) -> None:
        """Take lock ``name`` in one transaction; see :meth:`RunStore.acquire_lock`."""
        now, me = self.now(), json.dumps(this_process())
        with self._write() as conn:
            row = conn.execute(self.sa.select(self.locks).where(
                self.locks.c.name == name)).first()
            if row is None:
                conn.execute(self.locks.insert().values(name=name, owner=me, heartbeat_at=now))
                return
            refuse_held(name, json.loads(row.owner), row.heartbeat_at, now, self.stale_after_s)
            conn.execute(self.locks.update().where(self.locks.c.name == name).values(
                owner=me, heartbeat_at=now))

    def refresh_lock(self, name: str) -> None:
        """Refresh lock ``name``'s heartbeat; see :meth:`RunStore.refresh_lock`."""
        with self._write() as conn:
            conn.execute(self.locks.update().where(self.locks.c.name == name).values(
                heartbeat_at=self.now()))

    def release_lock(self, name: str) -> None:
        """Delete lock ``name`` if this process holds it; see :meth:`RunStore.release_lock`."""
        with self._write() as conn:
            row = conn.execute(self.sa.select(self.locks.c.owner).where(
                self.locks.c.name == name)).first()
            if row is not None and json.loads(row.owner).get("pid") == this_process()["pid"]:
                conn.execute(self.locks.delete().where(self.locks.c.name == name))

    # -- reading ------------------------------------------------------------------------------
    def list(self, *, state: str | None = None, study: str | None = None) -> list[dict]:
        """Runs in id order, JSON columns decoded; see :meth:`RunStore.list`."""
        check_state(state)
        if study:  # the study's members, with the names the study gave them
            cols = [c for c in self.runs.c if c.name not in ("study", "tags")]
            q = self.sa.select(*cols, self.members.c.study, self.members.c.tags).join(
                self.members, self.members.c.run_id == self.runs.c.id).where(
                self.members.c.study == study)
        else:
            q = self.sa.select(self.runs)
        q = q.order_by(self.runs.c.id)
        if state:
            q = q.where(self.runs.c.state == state)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [self._decode(r) for r in rows]

    @staticmethod
    def _decode(row) -> dict:
        d = dict(row)
        for k in ("config", "tags", "metrics", "timings", "artifacts", "owner"):
            d[k] = json.loads(d[k]) if d[k] else None
        return d

    def find(self, config: RunConfig) -> dict | None:
        """The run ``config`` with JSON columns decoded, or ``None``; see :meth:`RunStore.find`."""
        q = self.sa.select(self.runs).where(self.runs.c.run_key == config.key())
        with self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return None if row is None else self._decode(row)

    def epochs_of(self, run_id: int) -> list[dict]:
        """The run's per-epoch metrics in epoch order; see :meth:`RunStore.epochs_of`."""
        q = self.sa.select(self.epochs).where(self.epochs.c.run_id == run_id).order_by(
            self.epochs.c.epoch)
        with self.engine.connect() as conn:
            return [{"epoch": r.epoch, **json.loads(r.metrics)} for r in conn.execute(q)]
