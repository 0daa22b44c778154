"""Fine-tuning caches its embeddings in fp32 by default, whatever the model's inference precision.

bf16 training embeddings cut what a short fine-tuning reaches (a synthetic 40-step run: AUC 0.78 with
fp32 embeddings, 0.66 with bf16), while bf16 at inference over an fp32-trained decoder costs nothing
(DRIVE, 20 test images). So segmentation defaults to "auto" and training to "fp32".
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_retsam.errors import RetsamInputError


def test_store_embeds_at_its_own_precision_and_restores_the_models(tiny_sam, monkeypatch) -> None:
    from napari_retsam.sam import device as device_mod
    from napari_retsam.sam.embeddings import image_sha256
    from napari_retsam.training.embedding_store import EmbeddingStore

    monkeypatch.setattr(device_mod, "cpu_bf16_supported", lambda: True)  # "auto" means bf16 here
    tiny_sam.encoder_precision = "auto"
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    window = (0, 0, 40, 40)
    stores = {p: EmbeddingStore(tiny_sam, precision=p) for p in ("fp32", "auto")}
    keys = {p: s.register(image, image_sha256(image), window) for p, s in stores.items()}
    assert stores["fp32"].signatures[keys["fp32"]]["precision"] == "fp32"
    assert stores["auto"].signatures[keys["auto"]]["precision"] == "bfloat16"
    assert keys["fp32"] != keys["auto"]  # a cache never mixes the two
    assert tiny_sam.encoder_precision == "auto"  # the model's own setting is untouched
    exact = stores["fp32"].tensors[keys["fp32"]]
    with __import__("torch").no_grad():
        tiny_sam.encoder_precision = "fp32"
        ref = tiny_sam.embed(tiny_sam.preprocess(image)[None])[0]
    assert __import__("torch").equal(exact, ref)


def test_config_default_and_validation() -> None:
    from napari_retsam.training.config import FinetuneConfig

    assert FinetuneConfig().embedding_precision == "fp32"
    assert FinetuneConfig(embedding_precision="auto").embedding_precision == "auto"
    with pytest.raises(RetsamInputError, match="embedding precision"):
        FinetuneConfig(embedding_precision="int8")
