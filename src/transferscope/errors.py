"""Exception and warning types, and the one way to tell the user something (``note``).

Every message says what was expected, what came, and how to fix it.
"""

import logging

LOG = logging.getLogger("transferscope")


def note(message: str) -> None:
    """Tell the user what was done on their behalf (e.g. a checkpoint's ``module.`` prefix
    removed): logged at INFO on the ``transferscope`` logger, which the CLI prints as
    ``tscope: note: ...`` on stderr."""
    LOG.info(message)


class InputError(ValueError):
    """Bad user input: wrong shape, NaN, unknown name, unusable labels, ..."""


class ConstantFeaturesError(InputError):
    """Features that are constant in every column: they carry no information."""


class OptionalDependencyError(ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class TransferabilityWarning(UserWarning):
    """The score was computed, but the input makes it less trustworthy (e.g. D > N)."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's whole message on one line (whitespace collapsed), at most ``limit``
    characters; the exception's type name when it has no message."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its first sentence when that line is long),
    at most ``limit`` characters: what a one-line error quotes of a library's error."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    line = lines[0] if lines else type(exc).__name__
    if len(line) > 100 and ". " in line:
        line = line.split(". ")[0]
    return line[:limit]


def require(module: str, extra: str, purpose: str, install: str | None = None):
    """Import an optional module or fail with an error that names what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        how = install or f"pip install 'transferscope[{extra}]'"
        raise OptionalDependencyError(
            f"{purpose} needs the optional package '{module}', which is not installed "
            f"({exc}); install it with: {how}"
        ) from exc
