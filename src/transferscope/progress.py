"""Progress of long work: a bar on a terminal, periodic log lines anywhere else.

The one progress mechanism of transferscope, used by feature extraction (samples, batch by
batch), metric scoring (models of a ranking, layers of a profile, metrics of a feature set),
training (the epochs of a run, the batches of an epoch) and studies (runs done of total).

Each piece of work is a :class:`Progress` unit, opened with :func:`unit` as a context manager
and advanced with :meth:`Progress.update`. Units nest (a study's runs, a run's epochs, an
epoch's batches):

- when stderr is a terminal, each unit is a ``tqdm`` bar; a nested unit gets the next line
  (``position``) and is cleared when it ends (``leave=False``), so it never overwrites the
  line of the unit around it;
- anywhere else (``nohup``, CI, a notebook's captured log), each unit logs a line when it
  starts and when it ends (``done`` or ``stopped``), and a status line (count, percent,
  elapsed time, ETA) at most every ``log_every`` seconds (0: at every update), each prefixed
  by the units around it (``study tiny [2/5 runs] > scratch seed 0: ...``). Lines go to the
  ``transferscope.progress`` logger (the CLI prints them as ``tscope: ...``); where logging is
  not configured at all, they are written to stderr. Transient units (the batches of an epoch)
  log status lines only.

Settings live in one place, process-wide: :func:`configure` (``enabled``, ``log_every``,
``mode``), or :func:`settings` for a block of code; the CLI's ``--quiet`` and ``--log-every``
set them for one command. The environment variable ``TSCOPE_PROGRESS`` sets the initial
state: ``0`` / ``off`` disables progress (the test suite does), ``log`` forces log lines and
``bar`` forces bars. A ``progress=`` argument of an API function (``extract_features``,
``run_study``) overrides ``enabled`` for that call only (:func:`override`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, replace

from transferscope.errors import InputError

LOG = logging.getLogger("transferscope.progress")
MODES = ("auto", "bar", "log")


def check_log_every(value) -> float:
    """``value`` as seconds between progress lines, or a one-line error.

    Parameters
    ----------
    value : float
        Seconds; 0 logs every update.

    Returns
    -------
    float

    Raises
    ------
    InputError
        For a negative, infinite, NaN or non-numeric value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise InputError(f"Expected --log-every (log_every) to be a number of seconds >= 0, "
                         f"got {value!r}; pass 0 to log every update, or e.g. 30 for a line "
                         "every 30 seconds")
    return float(value)


@dataclass(frozen=True)
class ProgressSettings:
    """How progress is shown (process-wide; see :func:`configure`).

    Attributes
    ----------
    enabled : bool
        Show progress at all (``False``: nothing, what ``--quiet`` does).
    log_every : float
        Without a terminal: at most one status line every ``log_every`` seconds (0: one per
        update); start and end lines and per-epoch lines are always written.
    mode : {"auto", "bar", "log"}
        ``auto``: bars when stderr is a terminal, log lines otherwise.
    """

    enabled: bool = True
    log_every: float = 30.0
    mode: str = "auto"

    def __post_init__(self):
        check_log_every(self.log_every)
        if self.mode not in MODES:
            raise InputError(f"Expected progress mode in {MODES}, got {self.mode!r}")


def _from_environment() -> ProgressSettings:
    value = os.environ.get("TSCOPE_PROGRESS", "").strip().lower()
    if value in ("0", "off", "false", "no", "none"):
        return ProgressSettings(enabled=False)
    return ProgressSettings(mode=value if value in ("bar", "log") else "auto")


_settings = _from_environment()
_active: list[Progress] = []  # open units, outermost first
_last_line = [-math.inf]  # when the last log line was written (status lines are throttled)


def current() -> ProgressSettings:
    """The settings in force."""
    return _settings


def configure(*, enabled: bool | None = None, log_every: float | None = None,
              mode: str | None = None) -> ProgressSettings:
    """Change the process-wide progress settings; ``None`` keeps a setting as it is.

    Parameters
    ----------
    enabled : bool, optional
        Show progress (``False``: none, as ``--quiet``).
    log_every : float, optional
        Seconds between status lines without a terminal (0: every update).
    mode : {"auto", "bar", "log"}, optional
        Bars, log lines, or bars on a terminal and lines elsewhere.

    Returns
    -------
    ProgressSettings
        The settings before the change (give them back with ``configure(**vars(old))``, or
        use :func:`settings` for a block).

    Raises
    ------
    InputError
        For a negative ``log_every`` or an unknown ``mode``.
    """
    global _settings
    old = _settings
    changes = {k: v for k, v in (("enabled", enabled), ("log_every", log_every),
                                 ("mode", mode)) if v is not None}
    _settings = replace(_settings, **changes)
    return old


@contextlib.contextmanager
def settings(*, enabled: bool | None = None, log_every: float | None = None,
             mode: str | None = None):
    """:func:`configure` for the ``with`` block only (the settings before are restored).

    Examples
    --------
    >>> from transferscope import progress
    >>> with progress.settings(enabled=False):
    ...     pass  # no progress in here
    """
    old = configure(enabled=enabled, log_every=log_every, mode=mode)
    try:
        yield _settings
    finally:
        configure(enabled=old.enabled, log_every=old.log_every, mode=old.mode)


def override(progress: bool | None):
    """The context of an API function's ``progress=`` argument: ``None`` keeps the settings,
    ``True`` / ``False`` turn progress on or off for the call."""
    return contextlib.nullcontext() if progress is None else settings(enabled=bool(progress))


_PLURALS = {"batch": "batches"}


def _plural(unit: str, n: float) -> str:
    return unit if n == 1 else _PLURALS.get(unit, unit + "s")


def duration(seconds: float) -> str:
    """Seconds as ``4.2 s``, ``3 min 05 s`` or ``1 h 02 min``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _bars_wanted(s: ProgressSettings) -> bool:
    if s.mode != "auto":
        return s.mode == "bar"
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _write(message: str) -> None:
    """One log line: to the logger when logging is configured, else to stderr."""
    _last_line[0] = time.perf_counter()
    if LOG.hasHandlers():
        LOG.info(message)
    else:
        print(f"transferscope: {message}", file=sys.stderr, flush=True)


def echo(text: str) -> None:
    """Print ``text`` as one line on stderr without breaking the progress bars on screen (what
    the CLI's notes and progress lines go through)."""
    if any(u._bar is not None for u in _active):
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    else:  # one write: print's text and newline are two, which pool workers can interleave
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class Progress:
    """One unit of work: ``total`` things of a kind (``unit``), done one update at a time.

    Open it with :func:`unit` (a context manager); a disabled unit does nothing.

    Parameters
    ----------
    label : str
        What is being done (``"features effnet-lite:0 on digits"``).
    total : int, optional
        How many ``unit`` the work has (None: unknown).
    unit : str
        What is counted (``"sample"``, ``"epoch"``, ``"run"``); pluralised in lines.
    transient : bool
        Inner, short-lived work (the batches of one epoch): its bar is cleared when it ends
        and, without a terminal, it writes status lines only (no start or end line).
    """

    def __init__(self, label: str, total: int | None = None, unit: str = "item", *,
                 transient: bool = False):
        self.label, self.total, self.unit, self.transient = label, total, unit, transient
        self.n = 0
        self.postfix: dict = {}
        self.start = time.perf_counter()
        self.enabled = _settings.enabled
        self._bar = None
        self._open = False
        if not self.enabled:
            return
        depth = len(_active)
        self._outer = list(_active)
        _active.append(self)
        self._open = True
        if _bars_wanted(_settings):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit=unit, position=depth,
                             leave=depth == 0 and not transient, file=sys.stderr,
                             dynamic_ncols=True)
        elif not transient:
            what = "" if total is None else f" ({total} {_plural(unit, total)})"
            self._log(f"start{what}")

    # -- what the work calls ---------------------------------------------------------------
    def update(self, n: int = 1, *, silent: bool = False, **postfix) -> None:
        """Count ``n`` more done; ``postfix`` (e.g. ``batches=3``) is shown beside the count.

        Without a terminal, a status line is written when ``log_every`` seconds have passed
        since the last line (at every update with ``log_every=0``), unless ``silent`` (the
        caller writes its own :meth:`line` for the update, e.g. one per epoch)."""
        if not self._open:
            return
        self.n += n
        self.postfix = postfix
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
        elif not silent and time.perf_counter() - _last_line[0] >= _settings.log_every:
            self._log(self.status())

    def line(self, text: str) -> None:
        """Write ``text`` as a line of this unit now, not throttled (e.g. one line per epoch):
        above the bars on a terminal, a log line elsewhere."""
        if not self._open:
            return
        if self._bar is not None:
            echo(f"{self.label}: {text}")
        else:
            self._log(text)

    def close(self, error: BaseException | None = None) -> None:
        """End the unit: its bar is closed, or its end line is written (``done`` or, after an
        ``error``, ``stopped``)."""
        if not self._open:
            return
        self._open = False
        if self in _active:
            _active.remove(self)
        if self._bar is not None:
            self._bar.close()
        elif not self.transient:
            verb = "done" if error is None else "stopped"
            self._log(f"{verb}, {self.count()} in {duration(self.elapsed)}")

    # -- text --------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        """Seconds since the unit started."""
        return time.perf_counter() - self.start

    @property
    def eta(self) -> float:
        """Seconds left at the rate so far (NaN when it cannot be told)."""
        if not self.total or not self.n:
            return float("nan")
        return self.elapsed / self.n * max(0, self.total - self.n)

    def count(self) -> str:
        """``3/10 epochs`` (or ``3 epochs`` without a total)."""
        if self.total is None:
            return f"{self.n} {_plural(self.unit, self.n)}"
        return f"{self.n}/{self.total} {_plural(self.unit, self.total)}"

    def status(self) -> str:
        """Count, percentage, elapsed time, ETA and the postfix, on one line."""
        text = self.count()
        if self.total:
            text += f" ({100 * self.n / self.total:.0f}%)"
        text += f", {duration(self.elapsed)}"
        if self.total:
            text += f", ETA {duration(self.eta)}"
        if self.postfix:
            text += ", " + ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        return text

    def _log(self, text: str) -> None:
        outer = "".join(f"{u.label} [{u.count()}] > " for u in self._outer if u._open)
        _write(f"{outer}{self.label}: {text}")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(exc)
        return False


def unit(label: str, total: int | None = None, unit: str = "item", *,
         transient: bool = False) -> Progress:
    """Open a :class:`Progress` unit under the settings in force (use it with ``with``).

    Parameters
    ----------
    label : str
        What is being done.
    total : int, optional
        How many ``unit`` there are.
    unit : str
        What is counted.
    transient : bool
        Inner short work: bar cleared at the end, status lines only.

    Returns
    -------
    Progress

    Examples
    --------
    >>> from transferscope import progress
    >>> with progress.unit("demo", total=3, unit="step") as p:
    ...     for _ in range(3):
    ...         p.update()
    """
    return Progress(label, total, unit, transient=transient)


def quietly(fn, *args, **kwargs):
    """Call ``fn`` with progress disabled (what a study's worker processes run: the driver
    reports their runs)."""
    with settings(enabled=False):
        return fn(*args, **kwargs)
