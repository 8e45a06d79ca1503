"""The run-store contract: what every store promises, whatever keeps the runs.

After Optuna's ``BaseStorage``: an abstract class whose docstrings are the contract, a
SQLAlchemy implementation (:class:`~transferscope.store.sql.SQLRunStore`, SQLite by default,
any URL) and an in-memory one (:class:`~transferscope.store.memory.MemoryRunStore`, for
``--no-db`` and tests), so no caller branches on "is there a store".

The contract:

- A run is identified by :meth:`~transferscope.config.RunConfig.key` of its
  :class:`~transferscope.config.RunConfig` (which includes the seed) and nothing else; tags
  (target, source, arm) are stored beside it for people and reports, never keyed.
- A run belongs to any number of studies: starting it with ``study=`` (or :meth:`link`)
  makes it a member, with the names that study gives it (its tags there), so a run trained by
  ``tscope finetune`` and reused by a study is part of that study's results.
- :meth:`RunStore.start` returns ``None`` for a finished run (reuse it; never redo or
  duplicate it), a fresh handle for a new one, and restarts an unfinished one (failed, or
  ``running`` with a heartbeat older than ``stale_after_s``) from scratch under the same id,
  dropping its partial epochs. A ``running`` run with a fresh heartbeat is refused.
- A started run records its owner (host, process id and the process's start time). A
  ``running`` run whose owner is on this host and gone (killed, crashed) restarts at once; one
  whose owner is alive is never taken over; one owned elsewhere is taken over only when its
  heartbeat is older than ``stale_after_s`` (a lease).
- Finished runs are frozen: logging to, finishing or failing them again is an error.
- Named locks (``with store.lock("study:<name>")``) keep work that only one process may do
  (driving a study) to one process: the same owner rules as runs, with :meth:`refresh_lock`
  as the heartbeat.
- Every method is one transaction: a reader sees a run before or after a write, never half
  of it (``finish`` writes the metrics and flips the state together; ``set_artifacts``
  reads, merges and writes in one transaction).
- Thread safety: one store object may be shared by the threads of a process; separate
  processes may open the same URL (SQLite serialises writers; use a server database for many
  concurrent writers). A study's driver is its only writer.
"""

from __future__ import annotations

import os
import socket
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass

from transferscope.config import RunConfig
from transferscope.errors import InputError

STATES = ("running", "finished", "failed")
DEFAULT_URL = "sqlite:///tscope.db"


@dataclass(frozen=True)
class Run:
    """A handle on a started run.

    Attributes
    ----------
    id : int
        The store's id of the run.
    key : str
        :meth:`RunConfig.key`.
    attempt : int
        1 for the first start, +1 for every restart of an unfinished run.
    """

    id: int
    key: str
    attempt: int


def check_state(state: str | None) -> None:
    """Refuse a state filter that is not one of :data:`STATES`."""
    if state is not None and state not in STATES:
        raise InputError(f"Expected state one of {STATES}, got {state!r}")


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (clock ticks since boot, Linux), or ``None`` if unknown;
    with the pid it identifies a process even after its pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return float(fields[19])  # field 22 of the whole line: starttime
    except (OSError, IndexError, ValueError):
        return None


def this_process() -> dict:
    """The owner record of a run started by this process: host, pid, process start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _process_start(pid)}


def owner_alive(owner: dict | None) -> bool | None:
    """Whether a run's owner process still runs: ``True`` / ``False`` when it is on this host,
    ``None`` when that cannot be told here (another host, or no owner recorded)."""
    if not owner or owner.get("host") != socket.gethostname() or not owner.get("pid"):
        return None
    pid = int(owner["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    started = _process_start(pid)
    return owner.get("started") is None or started is None or started == owner["started"]


def is_stale(owner: dict | None, heartbeat_at: float, limit: float) -> bool:
    """A ``running`` run may be taken over: its owner is gone, or (owner elsewhere) its
    heartbeat is at or before ``limit``."""
    alive = owner_alive(owner)
    return alive is False or (alive is None and heartbeat_at <= limit)


def refuse_live(run_id: int, heartbeat_at: float, now: float, stale_after_s: float,
                owner: dict | None = None) -> None:
    """Refuse to take over a ``running`` run whose owner is alive, or (owner elsewhere) whose
    heartbeat is fresher than ``stale_after_s``; a run whose owner is gone passes at once."""
    if is_stale(owner, heartbeat_at, now - stale_after_s):
        return
    where = (f" in process {owner['pid']} on {owner['host']}" if owner and owner.get("pid")
             else "")
    hint = ("wait for it to finish" if owner_alive(owner) else
            "wait for it, or mark it stale if it is gone: tscope runs --mark-stale")
    raise InputError(f"Expected run {run_id} to be idle, got it running{where} (heartbeat "
                     f"{now - heartbeat_at:.0f}s ago); {hint}")


def refuse_held(name: str, owner: dict | None, heartbeat_at: float, now: float,
                stale_after_s: float) -> None:
    """Refuse to take a lock held by another live process (see :func:`refuse_live`)."""
    if owner and owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid():
        return  # this process holds it already
    if is_stale(owner, heartbeat_at, now - stale_after_s):
        return
    where = f"process {owner['pid']} on {owner['host']}" if owner else "another process"
    raise InputError(f"Expected {name} to be free, got it held by {where} (last seen "
                     f"{now - heartbeat_at:.0f}s ago); only one may run it: wait for that one "
                     "to finish")


def refuse_frozen(run_id: int, state: str) -> None:
    """Refuse a write to a run that is not ``running``."""
    if state != "running":
        raise InputError(f"Expected run {run_id} to be running, got {state}; "
                         "finished runs are frozen")


class RunStore(ABC):
    """Runs with their config, seed, tags, per-epoch metrics, results and artifacts.

    Parameters
    ----------
    stale_after_s : float
        A ``running`` run whose heartbeat is older than this may be restarted.
    """

    def __init__(self, *, stale_after_s: float = 600.0):
        self.stale_after_s = stale_after_s

    # -- writing ------------------------------------------------------------------------------
    @abstractmethod
    def start(self, config: RunConfig, *, study: str | None = None,
              tags: dict | None = None) -> Run | None:
        """Begin the run ``config``; ``None`` when it already finished (see the contract).

        Parameters
        ----------
        config : RunConfig
            The run's identity.
        study : str, optional
            The study the run belongs to.
        tags : dict, optional
            Names for people and reports (target, source, arm, ...); not keyed.

        Returns
        -------
        Run or None
        """

    @abstractmethod
    def log_epoch(self, run: Run, epoch: int, metrics: dict) -> None:
        """Record one epoch's metrics (JSON-able) and refresh the heartbeat."""

    @abstractmethod
    def finish(self, run: Run, metrics: dict, *, timings: dict | None = None,
               artifacts: dict | None = None) -> None:
        """Store the final metrics and mark the run finished (then frozen), atomically."""

    @abstractmethod
    def fail(self, run: Run, error: str) -> None:
        """Mark the run failed with ``error``; a later :meth:`start` restarts it."""

    @abstractmethod
    def set_artifacts(self, config: RunConfig, artifacts: dict) -> None:
        """Merge artifact paths into a finished run's (one transaction)."""

    @abstractmethod
    def link(self, config: RunConfig, study: str, tags: dict | None = None) -> bool:
        """Make the run ``config`` a member of ``study`` with ``tags`` (idempotent; updates
        the tags); ``False`` when there is no such run."""

    @abstractmethod
    def mark_stale(self, older_than_s: float | None = None, *,
                   study: str | None = None) -> int:
        """Mark ``running`` runs (of ``study``) as failed when their owner process is gone, or
        (owner on another host) without a heartbeat for ``older_than_s`` (default
        ``stale_after_s``); a run whose owner is alive is never marked. Returns how many."""

    # -- reading ------------------------------------------------------------------------------
    @abstractmethod
    def find(self, config: RunConfig) -> dict | None:
        """The run ``config`` as :meth:`list` returns it, or ``None``."""

    @abstractmethod
    def list(self, *, state: str | None = None, study: str | None = None) -> list[dict]:
        """Runs in id order, as dicts: ``id``, ``run_key``, ``study``, ``state``, ``attempt``,
        ``config`` (the :meth:`RunConfig.to_dict`), ``tags``, ``seed``, ``package_version``,
        ``created_at``, ``heartbeat_at``, ``finished_at``, ``metrics``, ``timings``,
        ``artifacts``, ``error``. With ``study``: that study's members, with the study's
        tags; otherwise every run with the tags it was started with."""

    @abstractmethod
    def epochs_of(self, run_id: int) -> list[dict]:
        """The run's per-epoch metrics in epoch order, each with its ``epoch``."""

    def to_frame(self, *, state: str | None = None, study: str | None = None,
                 epochs: bool = False):
        """The runs as a pandas DataFrame: one row per run, or per (run, epoch) with
        ``epochs=True``; see :func:`transferscope.store.export.runs_frame` for the columns.

        Parameters
        ----------
        state : {"running", "finished", "failed"}, optional
            Only runs in this state.
        study : str, optional
            Only that study's members, with the study's tags.
        epochs : bool
            One row per epoch of the stored learning curves instead of one per run.

        Returns
        -------
        pandas.DataFrame of shape (n_runs, n_columns) or (n_epochs, n_columns)
        """
        from transferscope.store.export import runs_frame

        return runs_frame(self, state=state, study=study, epochs=epochs)

    # -- locks ---------------------------------------------------------------------------------
    @abstractmethod
    def acquire_lock(self, name: str) -> None:
        """Take the lock ``name`` for this process, or raise a one-line :class:`InputError`
        naming the live process that holds it. A lock whose owner is gone (or, owned on
        another host, not refreshed for ``stale_after_s``) is taken over."""

    @abstractmethod
    def refresh_lock(self, name: str) -> None:
        """Refresh this process's lock ``name`` (its heartbeat)."""

    @abstractmethod
    def release_lock(self, name: str) -> None:
        """Release this process's lock ``name`` (no error if it is not held)."""

    @contextmanager
    def lock(self, name: str):
        """``with store.lock(name):`` - held for the body, released after (also on errors)."""
        self.acquire_lock(name)
        try:
            yield
        finally:
            self.release_lock(name)

    # -- the one way to run-or-reuse ----------------------------------------------------------
    @contextmanager
    def run(self, config: RunConfig, *, study: str | None = None, tags: dict | None = None):
        """``with store.run(cfg) as handle:`` - ``handle`` is ``None`` when the run already
        finished (reuse :meth:`find`); a body that raises (or is interrupted) marks the run
        failed with the error, and the exception propagates."""
        handle = self.start(config, study=study, tags=tags)
        try:
            yield handle
        except BaseException as exc:
            if handle is not None:
                self.fail(handle, f"{type(exc).__name__}: {exc}")
            raise

    @staticmethod
    def now() -> float:
        """Wall-clock seconds (heartbeats, creation and finish times)."""
        return time.time()
