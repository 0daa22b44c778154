"""Progress/cancel plumbing shared by the SAM engine (no torch, no Qt)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Cancelled", "ProgressFn", "StopFn", "check_stop", "report"]

ProgressFn = Callable[[int, int, str], None]
StopFn = Callable[[], bool]


class Cancelled(Exception):
    """The user asked to stop (``should_stop()`` returned True); no result."""


def report(progress: ProgressFn | None, done: int, total: int, message: str) -> None:
    """Call ``progress(done, total, message)`` when a callback was given."""
    if progress is not None:
        progress(int(done), int(total), message)


def check_stop(should_stop: StopFn | None) -> None:
    """Raise :class:`Cancelled` when ``should_stop()`` says so."""
    if should_stop is not None and should_stop():
        raise Cancelled("cancelled by the user")
