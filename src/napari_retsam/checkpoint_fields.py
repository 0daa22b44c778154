"""Typed field checks for loaded checkpoint dicts (torch imported inside).

Every project checkpoint -- the fine-tuned SAM format (:mod:`napari_retsam.sam.checkpoints`)
with its fine-tuning resume state (the ``"training"`` entry, :mod:`napari_retsam.training.checkpoint`)
and the GAN generator / training formats (:mod:`napari_retsam.gan.checkpoint`) -- is checked
field by field on load with :class:`CheckpointFields`. A field that is missing, of the wrong
type, out of range, or a tensor holding NaN/inf raises one
:class:`~napari_retsam.errors.RetsamInputError` line naming the file and the field::

    fine-tuned checkpoint runs/a/last.pt: field 'num_classes' must be an integer in 1..4, got 'abc'

:func:`first_non_finite` names the first tensor of a state dict that holds NaN/inf.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from napari_retsam.errors import RetsamInputError

__all__ = ["CheckpointFields", "first_non_finite", "show_value"]

_MISSING = object()
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: Integers beyond this are refused everywhere (no counter or size in a checkpoint is near it).
INT_LIMIT = 2**53


def show_value(value: Any) -> str:
    """A short description of a value for an error message."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"a {type(value).__name__} of shape {tuple(shape)} ({value.dtype})"
    if isinstance(value, Mapping):
        return f"a dict with {len(value)} entries"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _non_finite(tensor: Any) -> bool:
    import torch

    if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.numel() == 0:
        return False
    return not bool(torch.isfinite(tensor).all())


def first_non_finite(tensors: Mapping[str, Any]) -> str | None:
    """Name of the first floating-point tensor in ``tensors`` holding NaN or inf (None: all finite)."""
    for name, value in tensors.items():
        if _is_tensor(value) and _non_finite(value):
            return str(name)
    return None


class CheckpointFields:
    """Checks the fields of one loaded checkpoint dict.

    ``source`` is the file (or "the checkpoint" for an in-memory dict), ``what`` the kind
    of file in messages ("fine-tuned checkpoint", "GAN checkpoint"), ``prefix`` the path
    of a nested dict ("training."). Each accessor returns the checked value or raises.
    """

    def __init__(self, data: Mapping[str, Any], source: Any, what: str = "checkpoint", prefix: str = "") -> None:
        self.data = data
        self.source = source
        self.what = what
        self.prefix = prefix

    # ------------------------------------------------------------------ basics
    def fail(self, key: str, problem: str) -> NoReturn:
        """Raise the one-line error for field ``key``."""
        raise RetsamInputError(f"{self.what} {self.source}: field {self.prefix + key!r} {problem}")

    def value(self, key: str, *, optional: bool = False, default: Any = None) -> Any:
        """The raw value of ``key`` (missing: ``default`` when optional, else an error)."""
        if key not in self.data:
            if optional:
                return default
            self.fail(key, "is missing")
        return self.data[key]

    def _get(self, key: str, optional: bool, allow_none: bool) -> tuple[bool, Any]:
        """(present and not None, value): a missing optional field or an allowed None is not checked."""
        if key not in self.data:
            if optional:
                return False, None
            self.fail(key, "is missing")
        value = self.data[key]
        if value is None:
            if allow_none:
                return False, None
            self.fail(key, "is None")
        return True, value

    def sub(self, key: str, *, what: str | None = None) -> CheckpointFields:
        """The checker of the nested dict ``key``."""
        return CheckpointFields(self.mapping(key), self.source, what or self.what, f"{self.prefix}{key}.")

    # ------------------------------------------------------------------ plain values
    def integer(self, key: str, *, lo: int | None = 0, hi: int | None = None, optional: bool = False,
                default: Any = None, allow_none: bool = False) -> Any:
        """An integer (not a bool) in ``lo..hi`` (``hi`` None: up to 2**53)."""
        import numpy as np

        present, value = self._get(key, optional, allow_none)
        if not present:
            return default
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            self.fail(key, f"must be an integer, got {show_value(value)}")
        value = int(value)
        if (lo is not None and value < lo) or value > (INT_LIMIT if hi is None else hi):
            if hi is None:
                self.fail(key, f"must be an integer >= {lo}, got {value}")
            self.fail(key, f"must be an integer in {lo}..{hi}, got {value}")
        return value

    def number(self, key: str, *, lo: float | None = None, hi: float | None = None, finite: bool = True,
               optional: bool = False, default: Any = None, allow_none: bool = False) -> Any:
        """A real number (int or float, not a bool), finite unless ``finite=False``."""
        import numpy as np

        present, value = self._get(key, optional, allow_none)
        if not present:
            return default
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            self.fail(key, f"must be a number, got {show_value(value)}")
        value = float(value)
        if finite and not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {value}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.fail(key, f"must be a number in [{lo}, {hi}], got {value}")
        return value

    def text(self, key: str, *, choices: tuple[str, ...] | None = None, sha256: bool = False,
             optional: bool = False, default: Any = None, allow_none: bool = False) -> Any:
        """A string (one of ``choices``; a 64-digit hex SHA-256 with ``sha256=True``)."""
        present, value = self._get(key, optional, allow_none)
        if not present:
            return default
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {show_value(value)}")
        if choices is not None and value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)}, got {show_value(value)}")
        if sha256 and not _HEX64.match(value):
            self.fail(key, f"must be a SHA-256 (64 hex digits), got {show_value(value)}")
        return value

    def flag(self, key: str, *, optional: bool = False, default: Any = None) -> Any:
        """A bool."""
        import numpy as np

        present, value = self._get(key, optional, False)
        if not present:
            return default
        if not isinstance(value, (bool, np.bool_)):
            self.fail(key, f"must be true or false, got {show_value(value)}")
        return bool(value)

    def mapping(self, key: str, *, optional: bool = False, default: Any = None, allow_none: bool = False) -> Any:
        """A dict with string keys."""
        present, value = self._get(key, optional, allow_none)
        if not present:
            return default
        if not isinstance(value, dict):
            self.fail(key, f"must be a dict, got {show_value(value)}")
        for name in value:
            if not isinstance(name, str):
                self.fail(key, f"has a non-string key {show_value(name)}")
        return value

    def sequence(self, key: str, *, of: type | None = None, optional: bool = False, default: Any = None) -> Any:
        """A list or tuple (of items of type ``of``)."""
        present, value = self._get(key, optional, False)
        if not present:
            return default
        if not isinstance(value, (list, tuple)):
            self.fail(key, f"must be a list, got {show_value(value)}")
        if of is not None:
            for i, item in enumerate(value):
                if not isinstance(item, of) or (isinstance(item, bool) and of is not bool):
                    self.fail(key, f"item {i} must be a {of.__name__}, got {show_value(item)}")
        return value

    # ------------------------------------------------------------------ versions
    def format_version(self, key: str = "format_version", *, supported: int, optional: bool = False) -> Any:
        """A format version ``1..supported``; a newer one says to upgrade."""
        version = self.integer(key, lo=1, optional=optional, default=None)
        if version is not None and version > supported:
            self.fail(key, f"is {version}: the file was written by a newer napari-retsam (this version reads up "
                           f"to format_version {supported}); upgrade napari-retsam to use it")
        return version

    # ------------------------------------------------------------------ tensors
    def tensor(self, key: str, *, dtypes: tuple[Any, ...] | None = None, shape: tuple[int, ...] | None = None,
               ndim: int | None = None, finite: bool = True, optional: bool = False, allow_none: bool = False) -> Any:
        """A torch tensor (of one of ``dtypes``, of ``shape``/``ndim``), finite by default."""
        present, value = self._get(key, optional, allow_none)
        if not present:
            return None
        if not _is_tensor(value):
            self.fail(key, f"must be a tensor, got {show_value(value)}")
        if dtypes is not None and value.dtype not in dtypes:
            names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
            self.fail(key, f"must be a {names} tensor, got {str(value.dtype).replace('torch.', '')}")
        if ndim is not None and value.ndim != ndim:
            self.fail(key, f"must be a {ndim}-D tensor, got shape {tuple(value.shape)}")
        if shape is not None and tuple(value.shape) != tuple(shape):
            self.fail(key, f"must have shape {tuple(shape)}, got {tuple(value.shape)}")
        if finite and _non_finite(value):
            self.fail(key, "holds NaN/inf values")
        return value

    def tensors(self, key: str, *, allow_empty: bool = True, optional: bool = False) -> Any:
        """A state dict: string keys, tensor values, every floating-point tensor finite."""
        value = self.mapping(key, optional=optional)
        if value is None:
            return value
        if not value and not allow_empty:
            self.fail(key, "holds no tensors")
        for name, item in value.items():
            if not _is_tensor(item):
                self.fail(key, f"entry {name!r} must be a tensor, got {show_value(item)}")
        bad = first_non_finite(value)
        if bad is not None:
            self.fail(key, f"tensor {bad!r} holds NaN/inf values")
        return value

    def rng_state(self, key: str, *, optional: bool = False, allow_none: bool = False) -> Any:
        """A torch CPU generator state (a 1-D uint8 tensor of the length torch uses)."""
        import torch

        value = self.tensor(key, dtypes=(torch.uint8,), ndim=1, optional=optional, allow_none=allow_none)
        if value is not None:
            expected = torch.get_rng_state().numel()
            if value.numel() != expected:
                self.fail(key, f"must hold {expected} bytes (torch's generator state), got {value.numel()}")
        return value

    def optimizer(self, key: str) -> dict[str, Any]:
        """A ``torch.optim`` state dict: ``state`` (per-parameter entries, tensors finite) and ``param_groups``."""
        opt = self.sub(key)
        state = opt.value("state")
        if not isinstance(state, dict):
            opt.fail("state", f"must be a dict, got {show_value(state)}")
        for index, entry in state.items():
            if isinstance(index, bool) or not isinstance(index, (int, str)):
                opt.fail("state", f"has a bad parameter index {show_value(index)}")
            if not isinstance(entry, dict):
                opt.fail(f"state.{index}", f"must be a dict, got {show_value(entry)}")
            for name, item in entry.items():
                if _is_tensor(item):
                    if _non_finite(item):
                        opt.fail(f"state.{index}.{name}", "holds NaN/inf values")
                elif isinstance(item, bool) or not isinstance(item, (int, float, str, type(None))):
                    opt.fail(f"state.{index}.{name}", f"has an unexpected value {show_value(item)}")
                elif isinstance(item, float) and not math.isfinite(item):
                    opt.fail(f"state.{index}.{name}", f"must be finite, got {item}")
        groups = opt.sequence("param_groups", of=dict)
        if not groups:
            opt.fail("param_groups", "is empty")
        for i, group in enumerate(groups):
            params = group.get("params")
            if not isinstance(params, list) or any(isinstance(p, bool) or not isinstance(p, (int, str))
                                                   for p in params):
                opt.fail(f"param_groups.{i}.params", f"must be a list of parameter indices, got {show_value(params)}")
            lr = group.get("lr")
            lr_value = float(lr) if _is_tensor(lr) and lr.numel() == 1 else lr
            if isinstance(lr_value, bool) or not isinstance(lr_value, (int, float)) or not math.isfinite(lr_value) \
                    or lr_value < 0:
                opt.fail(f"param_groups.{i}.lr", f"must be a finite number >= 0, got {show_value(lr)}")
        return self.data[key]
