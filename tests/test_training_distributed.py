"""torchrun + DDP (gloo, CPU): two processes equal one process with the same global batch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_retsam.cli.main import main


@pytest.mark.slow
def test_two_process_ddp_equals_single_process(tmp_path: Path, tiny_sam_checkpoint: Path) -> None:
    from napari_retsam.data import write_synthetic_folder

    data = write_synthetic_folder(tmp_path / "data", 5, seed=1, size=64)
    common = ["--dataset", "folder", "--root", str(data), "--split", "all", "--checkpoint", str(tiny_sam_checkpoint),
              "--epochs", "3", "--batch-size", "4", "--lr", "1e-3", "--warmup-steps", "1", "--device", "cpu", "--views", "4",
              "--no-amp"]  # exact fp32 arithmetic: bf16 autocast rounds differently in different batch splits
    torchrun = shutil.which("torchrun")
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        launcher + ["--standalone", "--nproc-per-node", "2", "-m", "napari_retsam", "finetune",
                    *common, "--out", str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=240,
    )
    # torchrun's own summary comes last; the rank's error is usually earlier
    assert proc.returncode == 0, proc.stderr[:4000] + "\n...\n" + proc.stderr[-1500:]
    assert main([*["finetune"], *common, "--out", str(tmp_path / "single")]) == 0

    ddp = torch.load(tmp_path / "ddp" / "last.pt", map_location="cpu", weights_only=True)
    single = torch.load(tmp_path / "single" / "last.pt", map_location="cpu", weights_only=True)
    assert ddp["training"]["step"] == single["training"]["step"] == 3
    for part in ("sam", "fusion"):
        assert ddp[part].keys() == single[part].keys()
        for key in ddp[part]:
            assert torch.allclose(ddp[part][key], single[part][key], atol=2e-6, rtol=1e-5), key
    assert ddp["training"]["metrics"]["auc"] == pytest.approx(single["training"]["metrics"]["auc"], abs=1e-6)
    # the shared on-disk embedding cache holds one signed entry per distinct tile (4 items × 4 views + 1 val)
    assert len(list((tmp_path / "ddp" / "embedding_cache").glob("*.pt"))) == 4 * 4 + 1
    # only rank 0 wrote checkpoints: no stray temporary files
    assert not list((tmp_path / "ddp").glob(".*.tmp"))


def test_epoch_indices_shard_the_single_process_order() -> None:
    from napari_retsam.training.distributed import DistContext, epoch_indices

    single = epoch_indices(8, 3, 0, DistContext())
    r0 = epoch_indices(8, 3, 0, DistContext(world_size=2, rank=0))
    r1 = epoch_indices(8, 3, 0, DistContext(world_size=2, rank=1))
    assert sorted(single) == list(range(8))
    assert r0 == single[0::2] and r1 == single[1::2]
    # global batch k of size 4 == local batches k of size 2 on both ranks
    for k in range(2):
        assert sorted(r0[2 * k:2 * k + 2] + r1[2 * k:2 * k + 2]) == sorted(single[4 * k:4 * k + 4])
    assert epoch_indices(8, 4, 0, DistContext()) != single  # reshuffled every epoch
