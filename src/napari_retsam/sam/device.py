"""Device choice: cuda, then mps, then cpu, unless the user names one."""

from __future__ import annotations

from napari_retsam.errors import RetsamInputError

__all__ = ["DEVICE_CHOICES", "select_device"]

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


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
