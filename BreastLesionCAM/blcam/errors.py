"""The one exception type that reaches users.

Anything raised as :class:`BlcamError` is bad input or a refused operation: the CLI prints
its message on one line and exits non-zero, without a traceback. Every message names the
file, row or value at fault so the user can fix it without reading code.
"""


class BlcamError(Exception):
    """A problem with the user's input or request, explained in the message."""
