"""The one registry mechanism: named objects, looked up with a did-you-mean error.

Metrics, model backends, strategies, executors and datasets each keep one :class:`Registry`.
An entry is any object (a class, a factory function, a spec); ``register`` works as a
decorator or as a plain call, ``get`` fails with a one-line :class:`InputError` that suggests
the closest names, and :func:`check_options` checks user options against what an entry accepts
(a dataclass's fields, or a function's keyword parameters).

This module imports nothing heavy (no numpy, torch or scipy), so any package may use it: e.g.
importing :mod:`transferscope.data` does not import the metrics.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from transferscope.errors import InputError


def suggest(name: str, choices) -> str:
    """A "did you mean" suffix for an error message.

    Parameters
    ----------
    name : str
        The unknown name the user gave.
    choices : iterable of str
        The names that exist.

    Returns
    -------
    str
        ``"; did you mean 'x' or 'y'?"`` for up to three close matches, else ``""``.
    """
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def options_of(obj) -> dict[str, Any]:
    """The options an entry accepts, with their defaults.

    Parameters
    ----------
    obj : dataclass type, class or callable
        A dataclass (its fields), a class (its ``__init__`` keywords) or a function (its
        keyword-only parameters, or every parameter with a default when it has none).

    Returns
    -------
    dict
        Option name -> default (``inspect.Parameter.empty`` for a required option).
    """
    if dataclasses.is_dataclass(obj):
        return {f.name: (f.default if f.default is not dataclasses.MISSING else
                         f.default_factory() if f.default_factory is not dataclasses.MISSING
                         else inspect.Parameter.empty)
                for f in dataclasses.fields(obj) if f.init}
    params = inspect.signature(obj).parameters
    kw_only = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
    if kw_only:
        return kw_only
    return {k: p.default for k, p in params.items()
            if p.default is not p.empty and p.kind is not p.VAR_KEYWORD}


def check_options(owner: str, options: dict, allowed) -> None:
    """Refuse options that ``allowed`` does not list.

    Parameters
    ----------
    owner : str
        What takes the options, for the message (e.g. ``"strategy 'lp_ft'"``).
    options : dict
        The options the user gave.
    allowed : iterable of str
        The option names that exist.

    Raises
    ------
    InputError
        For the first unknown option, with a did-you-mean and the list of options.
    """
    allowed = list(allowed)
    for key in options:
        if key not in allowed:
            raise InputError(
                f"{owner} got an unknown option {key!r}{suggest(key, allowed)} "
                f"(options: {', '.join(allowed) or 'none'})"
            )


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          tuple: "a list", list: "a list", dict: "a table"}


def _accepts(kind, value) -> bool | None:
    """Whether ``value`` fits the annotation ``kind`` (``None``: not a simple type to check)."""
    import types
    import typing

    if kind in (typing.Any, object):
        return True
    if type(kind) is types.UnionType or typing.get_origin(kind) is typing.Union:
        results = [_accepts(k, value) for k in typing.get_args(kind)]
        return True if any(results) else (None if None in results else False)
    if kind is type(None):
        return value is None
    base = typing.get_origin(kind) or kind
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is str:
        return isinstance(value, str)
    if base in (tuple, list):
        return isinstance(value, (tuple, list))
    if base is dict:
        return isinstance(value, dict)
    return None


def check_types(owner: str, cls, options: dict) -> None:
    """Refuse option values whose type does not fit the dataclass field's annotation.

    The one schema of every config is its dataclass: ``epochs = 2.5`` or ``seeds = "3"`` fail
    here with one line, before any work, instead of in every run.

    Parameters
    ----------
    owner : str
        What takes the options, for the message.
    cls : dataclass type
        The config; annotations of ``int``, ``float``, ``bool``, ``str``, lists, tables and
        unions of them (``int | None``) are checked, others are left to the config.
    options : dict
        Field name -> value.

    Raises
    ------
    InputError
        Naming the field, the expected type and the value that came.
    """
    import typing

    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation this Python cannot evaluate: nothing to check
        return
    for key, value in options.items():
        kind = hints.get(key)
        if kind is not None and _accepts(kind, value) is False:
            want = " or ".join(dict.fromkeys(
                _NAMES.get(typing.get_origin(k) or k, getattr(k, "__name__", str(k)))
                for k in (typing.get_args(kind) or (kind,)) if k is not type(None)))
            none = " (or nothing)" if type(None) in typing.get_args(kind) else ""
            raise InputError(f"{owner}: expected {key} to be {want}{none}, got {value!r}")


class Registry:
    """Named entries of one kind, in registration order.

    Parameters
    ----------
    kind : str
        What an entry is, for messages (``"metric"``, ``"strategy"``, ...).
    plural : str
        The plural, for messages.
    hint : str, optional
        Appended to the unknown-name error (e.g. how names are spelled).

    Examples
    --------
    >>> executors = Registry("executor", "executors")
    >>> @executors.register("local")
    ... class Local: ...
    >>> executors.get("local").name
    'local'
    """

    def __init__(self, kind: str, plural: str, *, hint: str = ""):
        self.kind, self.plural, self.hint = kind, plural, hint
        self._entries: dict[str, Any] = {}

    def register(self, name: str, obj=None):
        """Register ``obj`` under ``name``; without ``obj``, a decorator.

        Classes and functions get a ``name`` attribute (classes) so they know their own name.
        A name registered twice is a programming error (``ValueError``).
        """

        def add(entry):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if inspect.isclass(entry):
                entry.name = name
            self._entries[name] = entry
            return entry

        return add if obj is None else add(obj)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def values(self) -> list:
        """Registered entries, in registration order."""
        return list(self._entries.values())

    def get(self, name: str):
        """The entry registered as ``name``.

        Raises
        ------
        InputError
            For an unknown name: the closest names and every registered one.
        """
        if name not in self._entries:
            raise InputError(f"Unknown {self.kind} {name!r}{suggest(name, self._entries)} "
                             f"({self.plural}: {', '.join(self.names())}){self.hint}")
        return self._entries[name]

    def options(self, name: str) -> dict[str, Any]:
        """Option name -> default of the entry ``name`` (see :func:`options_of`)."""
        return options_of(self.get(name))

    def check(self, name: str, options: dict) -> None:
        """Refuse options that the entry ``name`` does not accept, or (for a dataclass entry)
        whose values do not fit the field's type; one-line errors."""
        check_options(f"{self.kind} {name!r}", options, self.options(name))
        entry = self.get(name)
        if dataclasses.is_dataclass(entry):
            check_types(f"{self.kind} {name!r}", entry, options)

    def build(self, name: str, **options):
        """Call (construct) the entry ``name`` with ``options``, checked first."""
        self.check(name, options)
        factory: Callable = self.get(name)
        return factory(**options)
