"""The exceptions a user can cause, and one-line descriptions of any exception.

The CLI prints ``str(error)`` as a single line and exits non-zero; library
callers get an ordinary exception with the same message. As in pedalboard,
bad values are ``ValueError`` s: ``CakfxError`` subclasses it, so
``except ValueError`` catches a bad preset as well as a bad argument.
"""

from __future__ import annotations

import os


class CakfxError(ValueError):
    """A user-facing error: the message says what is wrong and where."""


class CakfxTypeError(CakfxError, TypeError):
    """A value of the wrong type (``node.amount = "loud"``): a ``TypeError`` where pedalboard
    raises one, and still a ``CakfxError`` (so a ``ValueError``): one ``except`` catches every
    bad value."""


def describe_exception(exc: BaseException) -> str:
    """One line saying what went wrong: the message of a ``CakfxError``, the OS's words
    for an OS error ("no space left on device", "file name too long"), else the
    exception's type and the last line of its message."""
    if isinstance(exc, CakfxError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else "error"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, RecursionError):
        return "too deeply nested"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__
