"""Device choice: cuda, then mps, then cpu, unless the user names one."""

from __future__ import annotations

from napari_retsam.errors import RetsamInputError

from napari_retsam.options import DEVICE_CHOICES

__all__ = ["DEVICE_CHOICES", "autocast_dtype", "cpu_bf16_supported", "select_device"]


def cpu_bf16_supported() -> bool:
    """True when this CPU runs bfloat16 matrix products natively (AVX512-BF16 or AMX, through oneDNN)."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device, enabled: bool = True):  # -> torch.dtype | None
    """Reduced precision for ``device``: float16 on CUDA, bfloat16 on a CPU that has it, else None (fp32)."""
    import torch

    if not enabled:
        return None
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.float16
    if kind == "cpu" and cpu_bf16_supported():
        return torch.bfloat16
    return None


def select_device(name: str | None = None):  # -> torch.device
    """``None``/"auto": first available of cuda, mps, cpu; else the named device.

    "cuda:1" style indices are accepted. A device that is not available raises
    :class:`RetsamInputError` (never a silent fallback).
    """
    import torch

    choice = (name or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(choice)
    except (RuntimeError, ValueError) as exc:
        raise RetsamInputError(f"unknown device {name!r}; use one of {', '.join(DEVICE_CHOICES)}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RetsamInputError("device 'cuda' asked for but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RetsamInputError(f"device {name!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise RetsamInputError("device 'mps' asked for but Apple MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise RetsamInputError(f"unsupported device {name!r}; use one of {', '.join(DEVICE_CHOICES)}")
    return device
