"""User-facing errors.

Anything a user can get wrong (a path, a shape, a value) raises
:class:`RetsamInputError` with a message that fits on one line and says what to
do. The CLI turns it into ``retsam: error: <message>`` on stderr and exit code 2;
the widgets turn it into a napari notification. Nothing else is caught there, so
a genuine bug still shows its traceback.
"""

from __future__ import annotations


class RetsamInputError(ValueError):
    """Bad input from the user: a one-line, actionable message."""

    def __init__(self, message: str) -> None:
        message = " ".join(str(message).split())  # force one line
        super().__init__(message)


class UndefinedMetricError(RetsamInputError):
    """A metric that has no value for this input (e.g. AUC with one class only)."""
