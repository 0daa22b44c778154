"""The fine-tuning loop on a tiny random SAM: PEFT, checkpoints, exact resume, faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_retsam.errors import RetsamInputError
from napari_retsam.progress import Cancelled
from napari_retsam.training.config import FinetuneConfig
from napari_retsam.training.data import TrainItem
from napari_retsam.training.loop import TrainingDiverged, lr_at, train


@pytest.fixture(scope="module")
def items() -> list[TrainItem]:
    from napari_retsam.data import synthetic_fundus

    out = []
    for k in range(6):
        f = synthetic_fundus(seed=k, size=64)
        out.append(TrainItem(f"s{k}", f.image, f.vessels, f.fov))
    return out


def _model(checkpoint: Path):
    from napari_retsam.sam import load_sam

    return load_sam(checkpoint, device="cpu")


def _config(**kw) -> FinetuneConfig:
    base = dict(model_type="tiny", epochs=2, batch_size=2, lr=2e-3, warmup_steps=2, n_views=2, tile=0,
                val_fraction=0.0, device="cpu", seed=0)
    base.update(kw)
    return FinetuneConfig(**base)


def _trainable(model) -> dict[str, torch.Tensor]:
    state = {f"fusion.{k}": v.clone() for k, v in model.fusion.state_dict().items()}
    state.update({f"dec.{k}": v.clone() for k, v in model.sam.mask_decoder.state_dict().items()})
    return state


def test_peft_trains_decoder_only_and_writes_loadable_checkpoints(items, tiny_sam_checkpoint, tmp_path) -> None:
    model = _model(tiny_sam_checkpoint)
    encoder_before = {k: v.clone() for k, v in model.sam.image_encoder.state_dict().items()}
    prompt_before = {k: v.clone() for k, v in model.sam.prompt_encoder.state_dict().items()}
    decoder_before = _trainable(model)
    calls = []
    original_embed = model.embed
    model.embed = lambda batch, **kw: (calls.append(batch.shape[0]), original_embed(batch, **kw))[1]  # type: ignore[method-assign]
    events: list[dict] = []
    result = train(model, items[:4], items[4:], _config(), tmp_path / "run", on_event=events.append)
    assert result.status == "finished" and result.step == 4  # 4 items / batch 2 = 2 steps × 2 epochs
    # encoder and prompt encoder untouched, decoder + fusion changed
    for k, v in model.sam.image_encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k])
    for k, v in model.sam.prompt_encoder.state_dict().items():
        assert torch.equal(v, prompt_before[k])
    after = _trainable(model)
    assert any(not torch.equal(after[k], decoder_before[k]) for k in after)
    assert any(k.startswith("fusion.") and not torch.equal(after[k], decoder_before[k]) for k in after)
    # the encoder ran once per distinct tile (4 items × 2 views + 2 validation images), never per step
    assert sum(calls) == 4 * 2 + 2
    # checkpoints: plain dicts loadable with weights_only, through the SAM engine's loader too
    for name in ("last.pt", "best.pt"):
        state = torch.load(tmp_path / "run" / name, map_location="cpu", weights_only=True)
        assert state["format"] == "napari-retsam/finetuned-v1" and state["model_type"] == "tiny"
        assert state["base_checkpoint_sha256"] == model.encoder_sha256
        tr = state["training"]
        assert tr["config"]["batch_size"] == 2 and len(tr["data_signature"]) == 64
        assert set(tr["metrics"]) >= {"auc", "se", "sp", "pa", "f1"}
        assert not any(k.startswith("image_encoder.") for k in state["sam"])  # decoder-only file
    from napari_retsam.sam import load_sam

    loaded = load_sam(tmp_path / "run" / "last.pt", device="cpu")
    for k, v in _trainable(loaded).items():
        assert torch.equal(v, after[k])
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "step"] == list(range(1, 5))
    vals = [r for r in log if r["kind"] == "val"]
    assert len(vals) == 2 and all(0.0 <= r["auc"] <= 1.0 for r in vals)
    assert [e["kind"] for e in events] == [r["kind"] for r in log]


def test_validation_metrics_match_the_metrics_engine(items, tiny_sam_checkpoint, tmp_path) -> None:
    from napari_retsam.metrics import evaluate_set
    from napari_retsam.sam.segmenter import Segmenter
    from napari_retsam.training.units import view_box

    model = _model(tiny_sam_checkpoint)
    result = train(model, items[:2], items[2:4], _config(epochs=1, tile=32, overlap=8), tmp_path / "v")
    seg = Segmenter(model)
    probs = [seg.segment(it.image, view_box(it, "fov")[None], tile=32, overlap=8).prob for it in items[2:4]]
    pooled = evaluate_set(probs, [it.mask for it in items[2:4]], [it.fov for it in items[2:4]]).pooled
    assert result.metrics["auc"] == pytest.approx(pooled.auc, abs=1e-9)
    assert result.metrics["f1"] == pytest.approx(pooled.f1, abs=1e-9)


def test_lr_schedule_warmup_then_cosine() -> None:
    config = FinetuneConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_at(s, 14, config) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, 14, config) == pytest.approx(1.0)
    assert lr_at(9, 14, config) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert lr_at(14, 14, config) == pytest.approx(0.1)


@pytest.mark.parametrize("accumulate, stop_after", [(1, 4), (2, 1)])
def test_resume_is_exact(items, tiny_sam_checkpoint, tmp_path, accumulate, stop_after) -> None:
    """N steps straight == k steps, stop, resume, N − k steps (weights bit-identical)."""
    config = _config(epochs=3, accumulate=accumulate, val_fraction=0.0)
    straight = _model(tiny_sam_checkpoint)
    full = train(straight, items[:5], [], config, tmp_path / "a")

    first = _model(tiny_sam_checkpoint)
    steps = []
    with pytest.raises(Cancelled) as stopped:  # the package's one way to stop; the run so far is .partial
        train(first, items[:5], [], config, tmp_path / "b",
              on_event=lambda r: steps.append(r) if r["kind"] == "step" else None,
              should_stop=lambda: len(steps) >= stop_after)
    part = stopped.value.partial
    assert part.status == "stopped" and part.step == stop_after
    second = _model(tiny_sam_checkpoint)
    rest = train(second, items[:5], [], config, tmp_path / "c", resume=tmp_path / "b" / "last.pt")
    assert rest.step == full.step and rest.status == "finished"
    a, b = _trainable(straight), _trainable(second)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses_a = [r["loss"] for r in full.history if r["kind"] == "step"]
    losses_b = [r["loss"] for r in rest.history if r["kind"] == "step"]
    assert losses_a == losses_b


def test_fewer_images_than_batch_size(items, tiny_sam_checkpoint, tmp_path) -> None:
    result = train(_model(tiny_sam_checkpoint), items[:2], [], _config(batch_size=8, epochs=1), tmp_path / "f")
    notes = [r for r in result.history if r["kind"] == "note"]
    assert notes and "batch size reduced from 8 to 2" in notes[0]["message"]
    assert result.step == 1


def test_empty_mask_is_trained_on(items, tiny_sam_checkpoint, tmp_path) -> None:
    blank = TrainItem("blank", items[0].image, np.zeros_like(items[0].mask), items[0].fov)
    result = train(_model(tiny_sam_checkpoint), [blank, items[1]], [], _config(epochs=1, n_views=1), tmp_path / "e")
    assert result.status == "finished"
    assert all(np.isfinite(r["loss"]) for r in result.history if r["kind"] == "step")


def test_nan_loss_stops_naming_the_step_and_keeps_last_good(items, tiny_sam_checkpoint, tmp_path, monkeypatch) -> None:
    from napari_retsam.training import loop

    real = loop.bsd_terms
    calls = [0]

    def poisoned(logits, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            logits = logits * float("nan")
        return real(logits, *args, **kwargs)

    monkeypatch.setattr(loop, "bsd_terms", poisoned)
    model = _model(tiny_sam_checkpoint)
    with pytest.raises(TrainingDiverged, match="at step 3 "):
        train(model, items[:4], [], _config(epochs=3, n_views=1), tmp_path / "n")
    state = torch.load(tmp_path / "n" / "last.pt", map_location="cpu", weights_only=True)
    assert state["training"]["step"] == 2  # the epoch-1 checkpoint, written before the NaN
    assert all(torch.isfinite(v).all() for v in state["sam"].values())


def test_unwritable_output_folder(items, tiny_sam_checkpoint, tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(RetsamInputError, match="cannot create output folder"):
        train(_model(tiny_sam_checkpoint), items[:2], [], _config(epochs=1), blocker / "out")


def test_full_disk_keeps_earlier_checkpoints(items, tiny_sam_checkpoint, tmp_path, monkeypatch) -> None:
    out = tmp_path / "d"
    train(_model(tiny_sam_checkpoint), items[:2], [], _config(epochs=1), out)
    before = {name: (out / name).read_bytes() for name in ("last.pt", "best.pt", "metrics.jsonl")}
    import napari_retsam.io_utils as io_utils

    def no_space(fd):  # noqa: ANN001
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io_utils.os, "fsync", no_space)
    with pytest.raises(RetsamInputError, match="No space left"):
        train(_model(tiny_sam_checkpoint), items[:2], [], _config(epochs=2), out)
    monkeypatch.undo()
    for name, data in before.items():
        assert (out / name).read_bytes() == data
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_killed_mid_write_keeps_previous_checkpoint(items, tiny_sam_checkpoint, tmp_path) -> None:
    """A process killed while writing last.pt (after part of the bytes hit the disk) leaves the old file."""
    out = tmp_path / "k"
    train(_model(tiny_sam_checkpoint), items[:2], [], _config(epochs=1), out)
    old = (out / "last.pt").read_bytes()
    script = textwrap.dedent(f"""
        import os, torch
        import napari_retsam.io_utils as io_utils
        io_utils.os.fsync = lambda fd: os._exit(9)   # die after writing the temp file, before the rename
        io_utils.atomic_save_torch({{"junk": torch.zeros(1000)}}, {str(out / "last.pt")!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 9
    assert (out / "last.pt").read_bytes() == old
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert state["training"]["step"] == 1


def test_resume_from_another_architecture_is_refused(items, tiny_sam_checkpoint, tmp_path) -> None:
    from napari_retsam.sam.models import MODEL_CONFIGS, build_sam

    train(_model(tiny_sam_checkpoint), items[:2], [], _config(epochs=1), tmp_path / "r")
    other_config = MODEL_CONFIGS["tiny"].to_dict() | {"decoder_mlp_dim": 32}
    other = build_sam("tiny", config=other_config, seed=0)
    with pytest.raises(RetsamInputError, match="another architecture"):
        train(other, items[:2], [], _config(epochs=2), tmp_path / "r2", resume=tmp_path / "r" / "last.pt")
    with pytest.raises(RetsamInputError, match="not a napari-retsam training checkpoint"):
        train(_model(tiny_sam_checkpoint), items[:2], [], _config(epochs=2), tmp_path / "r3",
              resume=tiny_sam_checkpoint)


def test_bce_loss_tiled_and_full_finetune(items, tiny_sam_checkpoint, tmp_path) -> None:
    model = _model(tiny_sam_checkpoint)
    encoder_before = {k: v.clone() for k, v in model.sam.image_encoder.state_dict().items()}
    result = train(model, items[:3], items[3:4], _config(epochs=1, loss="bsd+bce", tile=32, overlap=8,
                                                         full_finetune=True, max_steps=2), tmp_path / "x")
    assert result.status == "max_steps" and result.step == 2
    assert any(not torch.equal(v, encoder_before[k]) for k, v in model.sam.image_encoder.state_dict().items())
    state = torch.load(tmp_path / "x" / "best.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("image_encoder.") for k in state["sam"])  # self-contained
    from napari_retsam.sam import load_sam

    assert load_sam(tmp_path / "x" / "best.pt", device="cpu").model_type == "tiny"


def test_cached_embeddings_train_exactly_like_encoder_every_step(items, tiny_sam_checkpoint, tmp_path) -> None:
    cached = _model(tiny_sam_checkpoint)
    train(cached, items[:3], [], _config(epochs=2), tmp_path / "c")
    uncached = _model(tiny_sam_checkpoint)
    calls = []
    original_embed = uncached.embed
    uncached.embed = lambda batch, **kw: (calls.append(batch.shape[0]), original_embed(batch, **kw))[1]  # type: ignore[method-assign]
    result = train(uncached, items[:3], [], _config(epochs=2, cache_embeddings=False), tmp_path / "u")
    assert result.step == 4 and sum(calls) == 2 * 3  # every tile of every step: 3 tiles per epoch, 2 epochs
    a, b = _trainable(cached), _trainable(uncached)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_disk_cache_is_reused_by_the_next_run(items, tiny_sam_checkpoint, tmp_path) -> None:
    cache = tmp_path / "cache"
    first = _model(tiny_sam_checkpoint)
    train(first, items[:2], items[2:3], _config(epochs=1, cache_dir=str(cache)), tmp_path / "1")
    entries = sorted(p.name for p in cache.glob("*.pt"))
    assert len(entries) == 2 * 2 + 1  # 2 items × 2 views + 1 validation image
    second = _model(tiny_sam_checkpoint)
    calls = []
    original_embed = second.embed
    second.embed = lambda batch, **kw: (calls.append(batch.shape[0]), original_embed(batch, **kw))[1]  # type: ignore[method-assign]
    train(second, items[:2], items[2:3], _config(epochs=1, cache_dir=str(cache)), tmp_path / "2")
    assert calls == []  # every embedding came from the signed disk cache
    assert sorted(p.name for p in cache.glob("*.pt")) == entries


def test_without_fusion_only_the_decoder_learns(items, tiny_sam_checkpoint, tmp_path) -> None:
    """``fusion=False`` (``--no-fusion``): plain decoder-only PEFT; the fusion block stays the
    identity through training and validation, the decoder changes, and the checkpoint says so."""
    model = _model(tiny_sam_checkpoint)
    fusion_before = {k: v.clone() for k, v in model.fusion.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in model.sam.mask_decoder.state_dict().items()}
    train(model, items[:4], items[4:], _config(fusion=False, pixel_branch=0), tmp_path / "run")
    assert model.fusion.is_identity() and not model.uses_pixels
    for k, v in model.fusion.state_dict().items():
        assert torch.equal(v, fusion_before[k]), k
    assert any(not torch.equal(v, decoder_before[k]) for k, v in model.sam.mask_decoder.state_dict().items())
    saved = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert saved["training"]["config"]["fusion"] is False
    with pytest.raises(RetsamInputError, match="without fusion it must be 0"):
        _config(fusion=False, pixel_branch=16)
