"""Helpers shared by the dock widgets: user-error notifications and worker plumbing.

Every widget follows one pattern: read layers on the main thread, run one core
call (in a napari worker thread when it is long), write layers back on the main
thread. A :class:`~napari_retsam.errors.RetsamInputError` raised anywhere in that
chain becomes a napari notification, never a traceback in the viewer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from napari.utils.notifications import show_error, show_info, show_warning

from napari_retsam.errors import RetsamInputError

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["notify_user_errors", "show_error", "show_info", "show_warning", "worker_error_handler"]


def notify_user_errors(func: F) -> F:
    """Decorate a widget callback: a :class:`RetsamInputError` becomes a notification.

    The callback returns ``None`` in that case; other exceptions propagate.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RetsamInputError as exc:
            show_error(str(exc))
            return None

    return wrapper  # type: ignore[return-value]


def worker_error_handler(exc: BaseException) -> None:
    """Connect to a napari worker's ``errored`` signal.

    User errors show as one-line notifications; anything else shows its type and
    message (the full traceback still reaches napari's log).
    """
    if isinstance(exc, RetsamInputError):
        show_error(str(exc))
    else:
        show_error(f"{type(exc).__name__}: {exc}")
