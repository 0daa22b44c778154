"""Reuse large CPU tensor buffers instead of faulting in fresh pages for each one (glibc).

What goes wrong
    glibc's ``malloc`` serves every request above its mmap threshold (at most
    32 MiB, 64-bit) with a fresh ``mmap`` and returns it to the kernel on
    ``free``. LiteMedSAM's first encoder stage works on 256 × 256 × 256
    activations (32 MiB in bf16, 64 MiB in fp32) and allocates and frees
    several of them per block, so every pass touches hundreds of MiB of new
    pages: the kernel zero-fills each 4 KiB page on first touch, and on this
    2-core machine that page-fault work cost more than the arithmetic of the
    element-wise layers (a GELU over one such tensor: 12.7 ms into a new
    buffer, 4.2 ms into a reused one).

The fix
    :func:`reuse_large_buffers` sets three ``mallopt`` parameters once per
    process: no ``mmap`` for ordinary requests (``M_MMAP_MAX`` 0), so large
    blocks come from the heap and are recycled; freed heap memory is given back
    to the kernel only above 512 MiB at the top of the heap
    (``M_TRIM_THRESHOLD``); the heap grows in 64 MiB steps (``M_TOP_PAD``).
    Measured on the idle development machine, in one session: the bf16
    encoder pass went from 0.35 to 0.27 s per 256-px window, and a DRIVE
    image's first segmentation from 3.8 to 3.0 s. ``benchmarks/bench_encoder.py``
    measures it side by side. The values are unchanged: only allocation differs.
    The price: up to 512 MiB of freed memory stays with the process for reuse
    (its resident size does not fall back as far between jobs).

    It is called by :class:`~napari_retsam.sam.models.RetsamSam` and the GAN
    trainer before their first tensor work. It does nothing on other C
    libraries (macOS, Windows, musl).

Opt-out
    ``RETSAM_MALLOC_TUNE=0`` (also ``false``/``no``/``off``) leaves malloc as
    it is. This module imports neither torch, napari nor Qt.
"""

from __future__ import annotations

import ctypes
import platform
import sys
import threading

from napari_retsam._torch_runtime import opted_out

__all__ = ["ENV_VAR", "reuse_large_buffers"]

#: Environment variable that turns the tuning off (``0``, ``false``, ``no``, ``off``).
ENV_VAR = "RETSAM_MALLOC_TUNE"

# mallopt parameter numbers of glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

#: (parameter, value) pairs set by :func:`reuse_large_buffers`
SETTINGS = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 512 << 20), (_M_TOP_PAD, 64 << 20))

_lock = threading.Lock()
_state: dict[str, str] = {}


def reuse_large_buffers() -> str:
    """Tune glibc malloc so large buffers are reused (once per process); returns what was done.

    ``"tuned"``, ``"disabled"`` (opt-out variable set), ``"unsupported"`` (not
    glibc) or ``"failed"`` (``mallopt`` refused a setting; malloc's defaults
    stay in force for the rest).
    """
    with _lock:
        if "result" in _state:
            return _state["result"]
        if opted_out(ENV_VAR):
            result = "disabled"
        elif not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
            result = "unsupported"
        else:
            try:
                libc = ctypes.CDLL(None)
                mallopt = libc.mallopt
                mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
                mallopt.restype = ctypes.c_int
                ok = all(mallopt(param, value) == 1 for param, value in SETTINGS)
            except (OSError, AttributeError):
                ok = False
            result = "tuned" if ok else "failed"
        _state["result"] = result
        return result
