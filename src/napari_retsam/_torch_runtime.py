"""Make torch safe to use inside a running napari viewer (Linux, Mesa OpenGL).

What goes wrong
    PyTorch wheels for Linux depend on ``triton``, whose extension module
    ``triton/_C/libtriton.so`` carries its own copy of LLVM and exports its
    symbols. napari's OpenGL canvas on Mesa (llvmpipe under Xvfb or on a
    machine without a GPU driver, radeonsi on AMD GPUs, ...) has already loaded
    the system's ``libLLVM-NN.so`` into the process. When ``libtriton.so`` is
    loaded after that, the dynamic linker binds many of its LLVM references to
    the *other* LLVM already in the process, and its static initialisers crash:
    napari dies with a segmentation fault. Loading triton before the OpenGL
    context exists is fine, which is why scripts that build models before the
    viewer never see it.

Who loads triton
    Nothing in this package imports triton; torch does, through
    ``torch._dynamo``: ``torch/_dynamo/utils.py`` calls
    ``torch.utils._triton.has_triton_package()``, which runs ``import triton``.
    ``torch._dynamo`` itself is imported by ``import torchvision`` (its operator
    registrations; segment-anything imports torchvision), by the first call of
    any torch function wrapped with ``torch._compile._disable_dynamo`` — e.g.
    ``torch.optim.Optimizer.add_param_group``, so every optimizer — and by
    ``torch.compile``. torch has no switch that stops ``has_triton_package``
    from importing triton, and the wrappers are spread through torch, so
    avoiding every such path (or hiding triton) is neither possible nor robust.

The fix
    :func:`prepare_torch_runtime` loads ``libtriton.so`` once, before any torch
    work in the widgets, with ``dlopen(RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND)``:
    the library then resolves its symbols in itself first, so its LLVM never
    binds to Mesa's. The real ``import triton`` later (whenever torch wants
    it) finds the library already loaded and just initialises the module. No
    module is faked and nothing in torch changes; it costs one ``dlopen`` (well
    under a second) the first time a widget starts torch work. Every widget
    worker entry point that may touch torch (Segment, SAM (auto), live mode,
    Fine-tune Train, GAN Train / Generate / Report) calls it first, so no order
    of user actions can load triton the crashing way.

    It does nothing where it is not needed or not possible: when triton is not
    installed, when it was imported already (before the viewer, which is safe),
    or where ``RTLD_DEEPBIND`` does not exist (macOS, Windows, musl).

Opt-out
    ``RETSAM_TRITON_PRELOAD=0`` (also ``false``/``no``/``off``) turns the
    preload off, e.g. on a machine whose allocator or sanitiser does not
    tolerate ``RTLD_DEEPBIND`` libraries; the viewer may then crash on Mesa as
    described above. This module imports neither torch, napari nor Qt.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading
from pathlib import Path

__all__ = ["ENV_VAR", "prepare_torch_runtime", "triton_library"]

#: Environment variable that turns the triton preload off (``0``, ``false``, ``no``, ``off``).
ENV_VAR = "RETSAM_TRITON_PRELOAD"

_lock = threading.Lock()
_state: dict[str, str] = {}  # "result": what the first call did (kept for the answer of later calls)


def triton_library() -> Path | None:
    """Path of triton's native extension (``triton/_C/libtriton*.so``), or None without triton.

    Locating it does not import triton.
    """
    try:
        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        libs = sorted((Path(folder) / "_C").glob("libtriton*.so"))
        if libs:
            return libs[0]
    return None


def opted_out(variable: str) -> bool:
    """True when the environment variable ``variable`` is ``0``, ``false``, ``no`` or ``off``
    (the opt-out rule of every process set-up switch of the package)."""
    return os.environ.get(variable, "").strip().lower() in ("0", "false", "no", "off")


def _disabled() -> bool:
    return opted_out(ENV_VAR)


def prepare_torch_runtime() -> str:
    """Load triton's native library self-bound (``RTLD_DEEPBIND``) before torch can import triton.

    Safe to call from any thread, any number of times (the work happens once).
    Returns what was done, for logs and tests: ``"preloaded"``, ``"already
    imported"``, ``"no triton"``, ``"unsupported platform"``, ``"disabled"``
    (opt-out variable set) or ``"failed: <reason>"`` (the library could not be
    loaded; torch would then fail to import triton the same way).
    """
    with _lock:
        if "result" in _state:
            return _state["result"]
        if _disabled():
            return "disabled"  # not cached: the variable may still change
        result = _preload()
        _state["result"] = result
        return result


def _preload() -> str:
    if "triton" in sys.modules:
        return "already imported"
    deepbind = getattr(os, "RTLD_DEEPBIND", None)
    if deepbind is None or not sys.platform.startswith("linux"):
        return "unsupported platform"
    library = triton_library()
    if library is None:
        return "no triton"
    try:
        # Kept loaded for the life of the process (the handle is never closed);
        # ``import triton._C.libtriton`` later gets this same library back.
        ctypes.CDLL(str(library), mode=os.RTLD_NOW | os.RTLD_LOCAL | deepbind)
    except OSError as exc:
        return f"failed: {exc}"
    return "preloaded"
