"""GAN training: weights move, losses finite, files, exact resume, NaN stop, rank-0-only writing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_gan import tiny_config, tiny_pairs

from napari_retsam.errors import RetsamInputError
from napari_retsam.gan import losses as gan_losses
from napari_retsam.gan.checkpoint import load_generator
from napari_retsam.gan.train import GanDivergedError, GanTrainer, read_loss_log, train_gan
from napari_retsam.progress import STOPPED, Cancelled


@pytest.fixture(scope="module")
def pairs():
    return tiny_pairs()


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_training_changes_weights_and_writes_everything(tmp_path: Path, pairs) -> None:
    cfg = tiny_config(iterations=3)
    trainer = GanTrainer(cfg, pairs, tmp_path)
    before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    d_before = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    seen = []
    result = trainer.run(progress=lambda done, total, msg: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert result.iteration == 3 and result.status == "finished"
    after = trainer.G.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(d_before[k], v) for k, v in trainer.D.state_dict().items())
    log = read_loss_log(tmp_path / "losses.jsonl")
    assert [r["iteration"] for r in log] == [1, 2, 3]
    for r in log:
        assert all(np.isfinite(r[k]) for k in ("d_loss", "g_gan", "g_fm", "g_loss"))
        assert r["g_loss"] == pytest.approx(r["g_gan"] + cfg.beta * r["g_fm"], rel=1e-5)
    assert (tmp_path / "samples" / "iter_000002.png").is_file()
    state = _load(tmp_path / "last.pt")  # weights_only loadable
    assert state["iteration"] == 3 and "opt_g" in state and "opt_d" in state and "torch_rng_state" in state
    gen = _load(tmp_path / "generator_last.pt")
    assert gen["has_masks"] is True and gen["config"]["size"] == 32 and gen["iteration"] == 3
    assert torch.equal(gen["generator"]["to_output.weight"], after["to_output.weight"])
    assert json.loads((tmp_path / "config.json").read_text())["config"]["lr"] == 2e-4


def test_resume_is_exact(tmp_path: Path, pairs) -> None:
    cfg = tiny_config(iterations=4, checkpoint_every=2, sample_every=0)
    straight = GanTrainer(cfg, pairs, tmp_path / "straight")
    straight.run()
    # k = 2 iterations, stop (as Cancel does: the package's one way to stop), then resume to 4
    part = GanTrainer(cfg, pairs, tmp_path / "part")
    with pytest.raises(Cancelled) as stopped:
        part.run(should_stop=lambda: part.iteration >= 2)
    partial = stopped.value.partial
    assert partial.status == STOPPED and partial.iteration == 2 and set(partial.last_losses) >= {"d_loss", "g_fm"}
    assert partial.state_checkpoint == tmp_path / "part" / "last.pt" and "resume from" in str(stopped.value)
    assert _load(tmp_path / "part" / "last.pt")["iteration"] == 2  # written before Cancelled was raised
    assert _load(tmp_path / "part" / "generator_last.pt")["iteration"] == 2
    resumed = GanTrainer(cfg, pairs, tmp_path / "part", resume=tmp_path / "part" / "last.pt")
    assert resumed.iteration == 2
    resumed.run()
    for a, b in ((straight.G, resumed.G), (straight.D, resumed.D)):
        sa, sb = a.state_dict(), b.state_dict()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    log_a = read_loss_log(tmp_path / "straight" / "losses.jsonl")
    log_b = read_loss_log(tmp_path / "part" / "losses.jsonl")
    assert log_a == log_b


def test_resume_refuses_other_architecture_and_generator_only_files(tmp_path: Path, pairs, gan_run) -> None:
    with pytest.raises(RetsamInputError, match="size=32 .checkpoint. vs 64"):
        GanTrainer(tiny_config(size=64), tiny_pairs(size=64), tmp_path, resume=gan_run / "last.pt")
    with pytest.raises(RetsamInputError, match="not a full GAN training state"):
        GanTrainer(tiny_config(), pairs, tmp_path, resume=gan_run / "generator_last.pt")
    with pytest.raises(RetsamInputError, match="not found"):
        GanTrainer(tiny_config(), pairs, tmp_path, resume=tmp_path / "missing.pt")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, pairs, monkeypatch) -> None:
    cfg = tiny_config(iterations=5, checkpoint_every=2, sample_every=0)
    trainer = GanTrainer(cfg, pairs, tmp_path)
    real_fm = gan_losses.feature_matching_loss

    def poisoned(real, fake):
        value = real_fm(real, fake)
        return value * float("nan") if trainer.iteration == 3 else value

    monkeypatch.setattr("napari_retsam.gan.train.feature_matching_loss", poisoned)
    with pytest.raises(GanDivergedError, match="non-finite loss at iteration 4.*last good checkpoint"):
        trainer.run()
    good = _load(tmp_path / "last.pt")
    assert good["iteration"] == 2
    for v in good["generator_checkpoint"]["generator"].values():
        assert torch.isfinite(v).all()


def _ddp_worker(rank: int, out: str, port: int) -> None:
    import os

    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from napari_retsam.gan.train import distributed_context

    cfg = tiny_config(iterations=2, batch_size=1, checkpoint_every=1, sample_every=1)
    ctx = distributed_context("cpu")
    assert ctx.world_size == 2 and ctx.rank == rank
    trainer = GanTrainer(cfg, tiny_pairs(), out, dist_ctx=ctx)
    trainer.run()
    # gradients are all-reduced, so every rank ends with the same weights
    checksum = sum(float(v.double().sum()) for v in trainer.G.state_dict().values())
    with open(out + f"_rank{rank}.txt", "w") as fh:
        fh.write(f"{trainer.iteration} {checksum!r}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_training_only_rank0_writes(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(str(out), port), nprocs=2, join=True)
    rank0, rank1 = ((tmp_path / f"ddp_rank{r}.txt").read_text().split() for r in (0, 1))
    assert rank0 == rank1 and rank0[0] == "2"
    state = _load(out / "last.pt")
    assert state["iteration"] == 2 and state["world_size"] == 2
    assert [r["iteration"] for r in read_loss_log(out / "losses.jsonl")] == [1, 2]  # rank 0's log only
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["iter_000001.png", "iter_000002.png"]


def test_image_only_training_records_untrained_masks(gan_image_only_checkpoint) -> None:
    ckpt = load_generator(gan_image_only_checkpoint)
    assert ckpt.has_masks is False
    with pytest.raises(RetsamInputError, match="conditional GAN needs"):
        GanTrainer(tiny_config(mode="conditional"), tiny_pairs(masks=False), "unused")


def test_train_gan_wrapper_single_process(tmp_path: Path, pairs) -> None:
    result = train_gan(tiny_config(iterations=1, sample_every=0), pairs, tmp_path)
    assert result.generator_checkpoint.is_file() and result.iteration == 1
    # a stop passes through the wrapper as Cancelled, with the run so far (last.pt written)
    with pytest.raises(Cancelled) as stopped:
        train_gan(tiny_config(iterations=5, sample_every=0), pairs, tmp_path / "stop", should_stop=lambda: True)
    assert stopped.value.partial.status == STOPPED and stopped.value.partial.iteration == 0
    assert _load(tmp_path / "stop" / "last.pt")["iteration"] == 0
    with pytest.raises(RetsamInputError, match="32 px but the GAN is 64"):
        GanTrainer(tiny_config(size=64), pairs, tmp_path)
