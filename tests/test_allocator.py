"""napari_retsam._allocator: large buffers are recycled (counted in page faults, not timed)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from napari_retsam import _allocator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="glibc only")

_PROBE = textwrap.dedent("""
    import ctypes, sys
    import numpy as np
    from napari_retsam._allocator import reuse_large_buffers
    state = reuse_large_buffers() if sys.argv[1] == "tune" else "default"

    class MallInfo2(ctypes.Structure):  # glibc >= 2.33
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    buffers = []
    for _ in range(3):  # three 64 MiB buffers alive at once, written
        buffers.append(np.ones(16 << 20, np.float32))
    info = libc.mallinfo2()
    print(state, info.hblkhd >> 20, info.arena >> 20)  # MiB in mmapped blocks, MiB in the heap
""")


def _probe(mode: str, env: dict[str, str] | None = None) -> tuple[str, int, int]:
    state, mapped, heap = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                                         check=True, env=env).stdout.split()
    return state, int(mapped), int(heap)


def _has_mallinfo2() -> bool:
    import ctypes

    return hasattr(ctypes.CDLL(None), "mallinfo2")


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_large_buffers_come_from_the_reusable_heap() -> None:
    state, mapped, heap = _probe("default")
    assert state == "default" and mapped >= 192  # glibc's default: one fresh mmap per 64 MiB buffer
    state, mapped, heap = _probe("tune")
    assert state == "tuned"
    assert mapped < 64 and heap >= 192  # tuned: heap blocks, recycled after free


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_opt_out_variable_leaves_malloc_alone() -> None:
    import os

    state, mapped, _ = _probe("tune", dict(os.environ, **{_allocator.ENV_VAR: "0"}))
    assert state == "disabled" and mapped >= 192


def test_once_per_process(monkeypatch) -> None:
    monkeypatch.setattr(_allocator, "_state", {})
    first = _allocator.reuse_large_buffers()
    monkeypatch.setenv(_allocator.ENV_VAR, "0")
    assert _allocator.reuse_large_buffers() == first  # decided once, not per call
