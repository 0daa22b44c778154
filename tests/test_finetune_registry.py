"""The fine-tuned model registry the fine-tuning widget fills and the segmentation widget reads."""

from __future__ import annotations

from pathlib import Path

import torch

from napari_retsam.widgets._models import (
    RegisteredModel,
    clear_models,
    register_model,
    registered_models,
    subscribe,
)


def test_register_replace_subscribe_and_load(tiny_sam_checkpoint: Path, tiny_finetuned_checkpoint: Path) -> None:
    clear_models()
    heard: list[RegisteredModel] = []
    unsubscribe = subscribe(heard.append)
    entry = RegisteredModel("run1", tiny_finetuned_checkpoint, "tiny", base_checkpoint=tiny_sam_checkpoint)
    register_model(entry)
    again = RegisteredModel("run1 again", tiny_finetuned_checkpoint, "tiny", base_checkpoint=tiny_sam_checkpoint)
    register_model(again)  # same file: replaces
    assert registered_models() == [again] and heard == [entry, again]
    unsubscribe()
    register_model(RegisteredModel("other", tiny_sam_checkpoint, "tiny"))
    assert len(heard) == 2 and len(registered_models()) == 2
    model = again.load(device="cpu")
    state = torch.load(tiny_finetuned_checkpoint, map_location="cpu", weights_only=True)
    for k, v in state["fusion"].items():
        assert torch.equal(model.fusion.state_dict()[k], v)
    clear_models()
    assert registered_models() == []
