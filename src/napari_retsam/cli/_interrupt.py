"""Ctrl-C for long training commands: the first asks for a clean stop, the second stops at once.

``retsam finetune`` and ``retsam gan train`` poll ``should_stop()`` (the
package's stop contract, :mod:`napari_retsam.progress`) between steps; on a
stop request they write ``last.pt`` and raise
:class:`~napari_retsam.progress.Cancelled`, and the command prints how to
continue with ``--resume``. A second Ctrl-C while that step finishes raises
:class:`KeyboardInterrupt` as usual (``cli.main`` answers exit code 130),
keeping only the last periodic checkpoint. Standard library only.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator

__all__ = ["stop_on_interrupt"]


@contextlib.contextmanager
def stop_on_interrupt(what: str) -> Iterator[Callable[[], bool]]:
    """While inside, SIGINT sets a flag that the yielded ``should_stop()`` returns.

    ``what`` names the run in the message printed at the first Ctrl-C. Outside
    the main thread (where Python cannot install signal handlers) the yielded
    function always answers False and Ctrl-C behaves as usual.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum: int, frame: object) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        print(f"\nretsam: stopping {what} after the current step and saving it (Ctrl-C again: stop at once)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
