"""The run store: every run's config, seed, version, per-epoch metrics, results and artifacts.

One contract over any SQLAlchemy URL: ``sqlite:///tscope.db`` (the default, a local file) or a
server database (``postgresql://...``) when many workers write. Design, after Optuna's RDB
storage:

- a ``schema_version`` table; opening a store with a different version is a clear error;
- a run is identified by ``run_key`` = SHA-256 of its canonical JSON config and seed, so a rerun of
  finished work is skipped, never duplicated;
- every write is one transaction; ``finish`` stores the final metrics and flips the state in the
  same transaction, and a finished run is frozen (later writes are refused);
- a run killed without cleanup (kill -9) stays ``running`` with a stale heartbeat; ``start``
  treats such a run (and a ``failed`` one) as unfinished: its partial epochs are dropped and it
  starts again from scratch under the same id, so nothing half-written survives and nothing is
  lost; ``mark_stale`` reports them as ``failed`` for ``tscope runs``.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass

from transferscope.errors import InputError, require

SCHEMA_VERSION = 1
STATES = ("running", "finished", "failed")
DEFAULT_URL = "sqlite:///tscope.db"


def run_key(config: dict, seed: int) -> str:
    text = json.dumps({"config": config, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Run:
    id: int
    key: str
    attempt: int


class RunStore:
    """Runs in a database at ``url`` (any SQLAlchemy URL; default ``sqlite:///tscope.db``)."""

    def __init__(self, url: str = DEFAULT_URL, *, stale_after_s: float = 600.0):
        sa = require("sqlalchemy", "store", "The run store")
        self.sa = sa
        self.stale_after_s = stale_after_s
        self.engine = sa.create_engine(url, future=True)
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
            sa.Column("seed", sa.Integer, nullable=False),
            sa.Column("package_version", sa.String(40), nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("heartbeat_at", sa.Float, nullable=False),
            sa.Column("finished_at", sa.Float),
            sa.Column("metrics", sa.Text),
            sa.Column("timings", sa.Text),
            sa.Column("artifacts", sa.Text),
            sa.Column("error", sa.Text),
        )
        self.epochs = sa.Table(
            "epochs", meta,
            sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
            sa.Column("epoch", sa.Integer, primary_key=True),
            sa.Column("metrics", sa.Text, nullable=False),
        )
        meta.create_all(self.engine)
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(self.version.c.version)).scalars().all()
            if not rows:
                conn.execute(self.version.insert().values(version=SCHEMA_VERSION))
            elif rows[0] != SCHEMA_VERSION:
                raise InputError(
                    f"Expected a run store with schema version {SCHEMA_VERSION}, got version "
                    f"{rows[0]} at {url}; use a store written by this transferscope version"
                )

    # -- writing ------------------------------------------------------------------------------
    def start(self, config: dict, seed: int, *, study: str | None = None) -> Run | None:
        """Begin a run, or return ``None`` when the same config and seed already finished."""
        from transferscope import __version__

        sa, now, key = self.sa, time.time(), run_key(config, seed)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(self.runs).where(self.runs.c.run_key == key)).first()
            if row is None:
                res = conn.execute(self.runs.insert().values(
                    run_key=key, study=study, state="running", attempt=1,
                    config=json.dumps(config, sort_keys=True, default=str), seed=seed,
                    package_version=__version__, created_at=now, heartbeat_at=now))
                return Run(res.inserted_primary_key[0], key, 1)
            if row.state == "finished":
                return None
            if row.state == "running" and now - row.heartbeat_at < self.stale_after_s:
                raise InputError(
                    f"Expected run {row.id} to be idle, got it running (heartbeat "
                    f"{now - row.heartbeat_at:.0f}s ago); wait for it or mark it stale"
                )
            # unfinished (failed, or killed while running): start again from scratch
            conn.execute(self.epochs.delete().where(self.epochs.c.run_id == row.id))
            conn.execute(self.runs.update().where(self.runs.c.id == row.id).values(
                state="running", attempt=row.attempt + 1, heartbeat_at=now, error=None,
                package_version=__version__))
            return Run(row.id, key, row.attempt + 1)

    def _check_running(self, conn, run: Run):
        state = conn.execute(self.sa.select(self.runs.c.state).where(
            self.runs.c.id == run.id)).scalar_one()
        if state != "running":
            raise InputError(f"Expected run {run.id} to be running, got {state}; "
                             "finished runs are frozen")

    def log_epoch(self, run: Run, epoch: int, metrics: dict) -> None:
        with self.engine.begin() as conn:
            self._check_running(conn, run)
            conn.execute(self.epochs.insert().values(run_id=run.id, epoch=epoch,
                                                     metrics=json.dumps(metrics)))
            conn.execute(self.runs.update().where(self.runs.c.id == run.id).values(
                heartbeat_at=time.time()))

    def finish(self, run: Run, metrics: dict, *, timings: dict | None = None,
               artifacts: dict | None = None) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            self._check_running(conn, run)
            conn.execute(self.runs.update().where(self.runs.c.id == run.id).values(
                state="finished", finished_at=now, heartbeat_at=now,
                metrics=json.dumps(metrics), timings=json.dumps(timings or {}),
                artifacts=json.dumps(artifacts or {})))

    def set_artifacts(self, config: dict, seed: int, artifacts: dict) -> None:
        """Record artifact paths (e.g. a saved model) on the finished run; merged with any
        recorded before."""
        found = self.find(config, seed)
        if found is None or found["state"] != "finished":
            raise InputError(f"Expected a finished run to attach artifacts to, got "
                             f"{found['state'] if found else 'no run'}")
        with self.engine.begin() as conn:
            conn.execute(self.runs.update().where(self.runs.c.id == found["id"]).values(
                artifacts=json.dumps({**(found["artifacts"] or {}), **artifacts})))

    def fail(self, run: Run, error: str) -> None:
        with self.engine.begin() as conn:
            self._check_running(conn, run)
            conn.execute(self.runs.update().where(self.runs.c.id == run.id).values(
                state="failed", error=error[:2000], heartbeat_at=time.time()))

    def mark_stale(self, older_than_s: float | None = None, *,
                   study: str | None = None) -> int:
        """Mark runs (of ``study``, if given) whose heartbeat is older than the limit as failed;
        returns how many."""
        limit = time.time() - (self.stale_after_s if older_than_s is None else older_than_s)
        where = (self.runs.c.state == "running") & (self.runs.c.heartbeat_at <= limit)
        if study is not None:
            where = where & (self.runs.c.study == study)
        with self.engine.begin() as conn:
            res = conn.execute(self.runs.update().where(where).values(
                state="failed", error="no heartbeat (process killed?)"))
            return res.rowcount

    @contextmanager
    def run(self, config: dict, seed: int, *, study: str | None = None):
        """``with store.run(cfg, seed) as run:`` - yields None if already finished; a run whose
        body raises (or is interrupted) is marked failed, with the error."""
        handle = self.start(config, seed, study=study)
        try:
            yield handle
        except BaseException as exc:
            if handle is not None:
                self.fail(handle, f"{type(exc).__name__}: {exc}")
            raise

    # -- reading ------------------------------------------------------------------------------
    def list(self, *, state: str | None = None, study: str | None = None) -> list[dict]:
        if state is not None and state not in STATES:
            raise InputError(f"Expected state one of {STATES}, got {state!r}")
        q = self.sa.select(self.runs).order_by(self.runs.c.id)
        if state:
            q = q.where(self.runs.c.state == state)
        if study:
            q = q.where(self.runs.c.study == study)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [self._decode(r) for r in rows]

    @staticmethod
    def _decode(row) -> dict:
        d = dict(row)
        for k in ("config", "metrics", "timings", "artifacts"):
            d[k] = json.loads(d[k]) if d[k] else None
        return d

    def find(self, config: dict, seed: int) -> dict | None:
        """The run with this config and seed, as :meth:`list` returns it, or ``None``."""
        q = self.sa.select(self.runs).where(self.runs.c.run_key == run_key(config, seed))
        with self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return None if row is None else self._decode(row)

    def epochs_of(self, run_id: int) -> list[dict]:
        q = self.sa.select(self.epochs).where(self.epochs.c.run_id == run_id).order_by(
            self.epochs.c.epoch)
        with self.engine.connect() as conn:
            return [{"epoch": r.epoch, **json.loads(r.metrics)} for r in conn.execute(q)]
