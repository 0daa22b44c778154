"""The one progress/cancel contract of the package (no torch, no Qt).

Every long computation -- segmentation, SAM (auto), checkpoint download, the
Frangi baseline, fine-tuning, GAN training -- takes two optional
keyword callbacks and nothing else for this purpose:

* ``progress: ProgressFn | None`` called as ``progress(done, total, message)``
  (``total == 0``: amount unknown); use :func:`report`;
* ``should_stop: StopFn | None`` polled at safe points; use :func:`check_stop`.

**The one way to stop is the :class:`Cancelled` exception.** When
``should_stop()`` turns True the computation raises ``Cancelled`` instead of
returning. A computation whose partial work is worth keeping finishes the
current step, writes what it promises (a training run, fine-tuning or GAN: its
resumable ``last.pt``) and puts its result so far in :attr:`Cancelled.partial`
(a run result whose ``status`` is :data:`STOPPED`); otherwise ``partial`` is None.
A function never signals a stop by returning None or a special value.

Callers: the CLI lets ``Cancelled`` end the command (``retsam gan train`` prints
how to resume and exits 130); widgets catch it in their worker's error path and
show ``partial`` when there is one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["STOPPED", "Cancelled", "ProgressFn", "StopFn", "check_stop", "report"]

ProgressFn = Callable[[int, int, str], None]
StopFn = Callable[[], bool]
#: ``status`` of a run result that ended because ``should_stop()`` said so (``Cancelled.partial``).
STOPPED = "stopped"


class Cancelled(Exception):
    """The user asked to stop (``should_stop()`` returned True).

    ``partial``: what the computation kept before stopping (for example a training
    run's result after its last checkpoint was written), or None.
    """

    def __init__(self, message: str = "cancelled by the user", *, partial: Any = None) -> None:
        super().__init__(message)
        self.partial = partial


def report(progress: ProgressFn | None, done: int, total: int, message: str) -> None:
    """Call ``progress(done, total, message)`` when a callback was given."""
    if progress is not None:
        progress(int(done), int(total), message)


def check_stop(should_stop: StopFn | None, *, partial: Any = None) -> None:
    """Raise :class:`Cancelled` (with ``partial``) when ``should_stop()`` says so."""
    if should_stop is not None and should_stop():
        raise Cancelled("cancelled by the user", partial=partial)
