"""One exception type for everything a user can get wrong.

The CLI prints ``str(error)`` as a single line and exits non-zero; library
callers get an ordinary exception with the same message.
"""


class CakfxError(Exception):
    """A user-facing error: the message says what is wrong and where."""
