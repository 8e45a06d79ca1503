"""A run store in memory: the same contract as the database store, kept for this process only
(``tscope finetune --no-db``, tests, notebooks)."""

from __future__ import annotations

import copy
import json
import threading

from transferscope.config import RunConfig
from transferscope.errors import InputError
from transferscope.store.base import (
    Run,
    RunStore,
    check_state,
    is_stale,
    refuse_frozen,
    refuse_held,
    refuse_live,
    this_process,
)


class MemoryRunStore(RunStore):
    """Runs in a dict, guarded by a lock; gone when the process ends.

    Parameters
    ----------
    stale_after_s : float
        As in :class:`~transferscope.store.base.RunStore`.
    """

    def __init__(self, *, stale_after_s: float = 600.0):
        super().__init__(stale_after_s=stale_after_s)
        self._lock = threading.RLock()
        self._runs: dict[str, dict] = {}  # key -> row
        self._epochs: dict[int, dict[int, dict]] = {}
        self._members: dict[tuple[str, int], dict] = {}  # (study, run id) -> tags
        self._locks: dict[str, tuple[dict, float]] = {}  # name -> (owner, heartbeat)

    def _by_id(self, run_id: int) -> dict:
        return next(r for r in self._runs.values() if r["id"] == run_id)

    def start(self, config, *, study=None, tags=None):
        """Begin, reuse or restart the run, under the lock; see :meth:`RunStore.start`."""
        from transferscope import __version__

        key, now = config.key(), self.now()
        with self._lock:
            row = self._runs.get(key)
            if row is None:
                row = {"id": len(self._runs) + 1, "run_key": key, "study": study,
                       "state": "running", "attempt": 1, "config": config.to_dict(),
                       "tags": dict(tags or {}), "seed": config.seed,
                       "package_version": __version__, "created_at": now,
                       "heartbeat_at": now, "finished_at": None, "metrics": None,
                       "timings": None, "artifacts": None, "error": None,
                       "owner": this_process()}
                self._runs[key] = row
                self._epochs[row["id"]] = {}
                self._link(study, row["id"], tags)
                return Run(row["id"], key, 1)
            self._link(study, row["id"], tags)
            if row["state"] == "finished":
                return None
            if row["state"] == "running":
                refuse_live(row["id"], row["heartbeat_at"], now, self.stale_after_s,
                            row["owner"])
            self._epochs[row["id"]] = {}
            row.update(state="running", attempt=row["attempt"] + 1, heartbeat_at=now,
                       error=None, package_version=__version__, owner=this_process())
            return Run(row["id"], key, row["attempt"])

    def _link(self, study, run_id, tags):
        if study is not None:
            self._members[(study, run_id)] = dict(tags or {})

    def link(self, config, study, tags=None):
        """Add the run to ``study`` with ``tags``; see :meth:`RunStore.link`."""
        with self._lock:
            row = self._runs.get(config.key())
            if row is not None:
                self._link(study, row["id"], tags)
            return row is not None

    def _running(self, run: Run) -> dict:
        row = self._by_id(run.id)
        refuse_frozen(run.id, row["state"])
        return row

    def log_epoch(self, run, epoch, metrics):
        """Record one epoch (a JSON round-trip copy of ``metrics``); see
        :meth:`RunStore.log_epoch`."""
        with self._lock:
            row = self._running(run)
            if epoch in self._epochs[run.id]:
                raise InputError(f"Expected a new epoch for run {run.id}, got epoch {epoch} "
                                 "again")
            self._epochs[run.id][epoch] = json.loads(json.dumps(metrics))
            row["heartbeat_at"] = self.now()

    def finish(self, run, metrics, *, timings=None, artifacts=None):
        """Store the final results and mark the run finished; see :meth:`RunStore.finish`."""
        with self._lock:
            row = self._running(run)
            now = self.now()
            row.update(state="finished", finished_at=now, heartbeat_at=now,
                       metrics=json.loads(json.dumps(metrics)),
                       timings=dict(timings or {}), artifacts=dict(artifacts or {}))

    def fail(self, run, error):
        """Mark the run failed (error kept to 2,000 characters); see :meth:`RunStore.fail`."""
        with self._lock:
            row = self._running(run)
            row.update(state="failed", error=error[:2000], heartbeat_at=self.now())

    def set_artifacts(self, config, artifacts):
        """Merge artifact paths into a finished run; see :meth:`RunStore.set_artifacts`."""
        with self._lock:
            row = self._runs.get(config.key())
            if row is None or row["state"] != "finished":
                raise InputError(f"Expected a finished run to attach artifacts to, got "
                                 f"{row['state'] if row else 'no run'}")
            row["artifacts"] = {**(row["artifacts"] or {}), **artifacts}

    def mark_stale(self, older_than_s=None, *, study=None):
        """Fail ``running`` runs without a recent heartbeat; see :meth:`RunStore.mark_stale`."""
        limit = self.now() - (self.stale_after_s if older_than_s is None else older_than_s)
        n = 0
        with self._lock:
            for row in self._runs.values():
                if (row["state"] == "running"
                        and is_stale(row["owner"], row["heartbeat_at"], limit)
                        and (study is None or row["study"] == study)):
                    row.update(state="failed", error="its process is gone or its heartbeat "
                               "stopped")
                    n += 1
        return n

    def acquire_lock(self, name):
        """Take lock ``name``; see :meth:`RunStore.acquire_lock`."""
        with self._lock:
            if name in self._locks:
                owner, beat = self._locks[name]
                refuse_held(name, owner, beat, self.now(), self.stale_after_s)
            self._locks[name] = (this_process(), self.now())

    def refresh_lock(self, name):
        """Refresh lock ``name``; see :meth:`RunStore.refresh_lock`."""
        with self._lock:
            if name in self._locks:
                self._locks[name] = (self._locks[name][0], self.now())

    def release_lock(self, name):
        """Release lock ``name``; see :meth:`RunStore.release_lock`."""
        with self._lock:
            self._locks.pop(name, None)

    def find(self, config: RunConfig):
        """A copy of the run ``config``, or ``None``; see :meth:`RunStore.find`."""
        with self._lock:
            row = self._runs.get(config.key())
            return copy.deepcopy(row)

    def list(self, *, state=None, study=None):
        """Copies of the runs in id order; see :meth:`RunStore.list`."""
        check_state(state)
        with self._lock:
            out = []
            for r in sorted(self._runs.values(), key=lambda r: r["id"]):
                if state is not None and r["state"] != state:
                    continue
                if study is None:
                    out.append(copy.deepcopy(r))
                elif (study, r["id"]) in self._members:
                    out.append(dict(copy.deepcopy(r), study=study,
                                    tags=dict(self._members[(study, r["id"])])))
            return out

    def epochs_of(self, run_id):
        """The run's per-epoch metrics in epoch order; see :meth:`RunStore.epochs_of`."""
        with self._lock:
            return [{"epoch": e, **m} for e, m in sorted(self._epochs.get(run_id, {}).items())]
