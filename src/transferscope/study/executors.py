"""Where study tasks run: in this process, in a local process pool, or on a Ray cluster.

An executor takes a function and a list of tasks and yields ``(index, result, error)`` as tasks
complete, in any order. Results come back to the driver, which alone writes the run store
(so SQLite works with any executor). Adding one is a class plus ``@executor("name")``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from transferscope.errors import InputError, require
from transferscope.progress import quietly
from transferscope.registry import Registry

EXECUTORS = Registry("executor", "executors")
executor = EXECUTORS.register


def make_executor(name: str, **options):
    """The executor ``name`` (``local`` or ``ray``) built with ``options``."""
    return EXECUTORS.get(name)(**options)


def _run_quietly(fn: Callable, task):
    """``fn(task)`` with progress off: in a worker process or Ray task the driver reports each
    run as its result arrives, so workers keep stderr and their logs quiet."""
    return quietly(fn, task)


def _worker_showwarning():
    """The driver's ``warnings.showwarning`` when it is one of transferscope's own module-level
    functions (the CLI's one-line format), so that worker processes show warnings as the
    driver does; ``None`` (Python's default) otherwise."""
    import warnings

    show = warnings.showwarning
    module = getattr(show, "__module__", "") or ""
    if module.startswith("transferscope") and show.__qualname__ == show.__name__:
        return show
    return None


def _init_worker(n: int, showwarning=None) -> None:
    """A worker process: ``n`` torch threads, and the driver's warning display (one line, and
    libraries' DeprecationWarnings ignored, as ``tscope`` shows them) when it is ours."""
    import warnings

    import torch

    torch.set_num_threads(max(1, n))
    if showwarning is not None:
        warnings.showwarning = showwarning
        warnings.simplefilter("ignore", DeprecationWarning)


@executor("local")
class LocalExecutor:
    """``jobs`` worker processes (spawned, each with cores / jobs torch threads); ``jobs=1``
    runs the tasks in this process, one after another."""

    def __init__(self, jobs: int = 1, **_ignored):
        if jobs < 1:
            raise InputError(f"Expected --jobs >= 1, got {jobs}")
        self.jobs = jobs
        self.pool = None

    def run(self, fn: Callable, tasks: list) -> Iterator[tuple[int, object, BaseException]]:
        """Run ``fn`` on every task, in this process (``jobs=1``, in order) or in a spawned process
        pool (in completion order).

        Parameters
        ----------
        fn : callable
            Takes one task; with ``jobs > 1`` it and the tasks must be picklable.
        tasks : list
            The tasks.

        Yields
        ------
        tuple of (int, object, BaseException or None)
            ``(index in tasks, result, None)`` or ``(index, None, error)``: a failing task does not
            stop the others.
        """
        if self.jobs == 1:
            for i, task in enumerate(tasks):
                try:
                    yield i, fn(task), None
                except Exception as exc:  # a failed task is reported; the study goes on
                    yield i, None, exc
            return
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        self.pool = ProcessPoolExecutor(self.jobs, mp_context=mp.get_context("spawn"),
                                        initializer=_init_worker,
                                        initargs=(threads, _worker_showwarning()))
        completed = False
        try:
            pending = {self.pool.submit(_run_quietly, fn, t): i for i, t in enumerate(tasks)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    exc = fut.exception()
                    yield i, (None if exc else fut.result()), exc
            completed = True
        finally:
            if completed:
                self.pool.shutdown(wait=True)
            else:  # Ctrl-C, SIGTERM, an error or an early stop in the driver
                _stop_pool(self.pool)


def _stop_pool(pool, grace_s: float = 5.0) -> None:
    """Stop a process pool now: queued tasks are cancelled and the workers, which may be in the
    middle of a long run, are terminated (SIGTERM, then SIGKILL after ``grace_s``) and reaped.

    Only the driver writes the run store, so a worker left running after its driver stopped
    would spend CPU on a result nobody receives; the runs it was doing stay unfinished in the
    store and the next call redoes them."""
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14
        pool.terminate_workers()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(grace_s)
        if p.is_alive():
            p.kill()
            p.join()


@executor("ray")
class RayExecutor:
    """Each task a Ray task with ``cpus`` CPUs and ``gpus`` GPUs; connects to ``address``
    (e.g. ``auto`` or ``ray://host:10001``) or starts a local Ray with ``jobs`` CPUs."""

    def __init__(self, jobs: int | None = None, address: str | None = None, cpus: float = 1,
                 gpus: float = 0, **_ignored):
        self.ray = require("ray", "ray", "the Ray executor")
        self.address, self.jobs, self.cpus, self.gpus = address, jobs, cpus, gpus

    def run(self, fn, tasks):
        """Run ``fn`` on every task as Ray tasks, yielding results in completion order; Ray is
        started (and shut down afterwards) unless already initialised, and tasks left over when
        the caller stops early are cancelled.

        Parameters
        ----------
        fn : callable
            Takes one task; it and the tasks must be serialisable by Ray.
        tasks : list
            The tasks.

        Yields
        ------
        tuple of (int, object, BaseException or None)
            ``(index in tasks, result, None)`` or ``(index, None, error)`` with the task's own
            error unwrapped from Ray's.
        """
        ray = self.ray
        started = False
        if not ray.is_initialized():
            kw = {"address": self.address} if self.address else {"num_cpus": self.jobs}
            ray.init(include_dashboard=False, log_to_driver=False, **kw)
            started = True
        refs = {}
        try:
            remote = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus)(_run_quietly)
            refs = {remote.remote(fn, t): i for i, t in enumerate(tasks)}
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                i = refs.pop(done[0])
                try:
                    yield i, ray.get(done[0]), None
                except Exception as exc:  # the task's own error, re-raised by Ray
                    yield i, None, getattr(exc, "cause", None) or exc
        finally:
            for ref in refs:  # left over when the driver stops early
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()
