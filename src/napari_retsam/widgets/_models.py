"""Models the widgets offer: fine-tuned checkpoints announced by the fine-tuning widget.

A small process-wide registry (no Qt, no torch): the fine-tuning widget calls
:func:`register_model` when a run ends; the segmentation widget lists
:func:`registered_models` and :func:`subscribe` s to hear about new ones, so the
new model appears in its model choice without a restart. Entries point to files
(``checkpoint`` = the fine-tuned ``best.pt``, ``base_checkpoint`` = the base SAM
file it was trained from, needed when the fine-tuned file is decoder-only);
load them with ``napari_retsam.sam.load_sam(base_checkpoint, finetuned=checkpoint)``
or, when ``base_checkpoint`` is None, ``load_sam(checkpoint)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RegisteredModel", "register_model", "registered_models", "subscribe", "clear_models"]


@dataclass(frozen=True)
class RegisteredModel:
    """A fine-tuned model on disk, as offered to the user."""

    name: str
    checkpoint: Path
    model_type: str
    base_checkpoint: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def load(self, device: Any = None):  # -> RetsamSam
        """Load through the SAM engine's loader."""
        from napari_retsam.sam import load_sam

        if self.base_checkpoint is not None:
            return load_sam(self.base_checkpoint, model_type=self.model_type, device=device, finetuned=self.checkpoint)
        return load_sam(self.checkpoint, model_type=self.model_type, device=device)


_MODELS: list[RegisteredModel] = []
_LISTENERS: list[Callable[[RegisteredModel], None]] = []


def register_model(entry: RegisteredModel) -> None:
    """Add ``entry`` (replacing an entry for the same checkpoint file) and tell the subscribers."""
    _MODELS[:] = [m for m in _MODELS if Path(m.checkpoint) != Path(entry.checkpoint)]
    _MODELS.append(entry)
    for listener in list(_LISTENERS):
        listener(entry)


def registered_models() -> list[RegisteredModel]:
    """The registered models, oldest first."""
    return list(_MODELS)


def subscribe(listener: Callable[[RegisteredModel], None]) -> Callable[[], None]:
    """Call ``listener(entry)`` for every new entry; returns a function that unsubscribes."""
    _LISTENERS.append(listener)

    def unsubscribe() -> None:
        if listener in _LISTENERS:
            _LISTENERS.remove(listener)

    return unsubscribe


def clear_models() -> None:
    """Forget every entry (tests)."""
    _MODELS.clear()
