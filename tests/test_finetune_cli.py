"""``retsam finetune`` end to end on synthetic DRIVE and a tiny random SAM checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from napari_retsam.cli.main import main


def _args(drive_root: Path, ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--dataset", "drive", "--root", str(drive_root), "--out", str(out),
            "--checkpoint", str(ckpt), "--model-type", "tiny", "--epochs", "2", "--batch-size", "2",
            "--lr", "1e-3", "--device", "cpu", "--views", "2", *extra]


def test_finetune_writes_checkpoints_and_log_then_segment_uses_them(
    drive_root, tiny_sam_checkpoint, tmp_path, capsys
) -> None:
    out = tmp_path / "run"
    assert main(_args(drive_root, tiny_sam_checkpoint, out, "--tile", "0", "--val-split", "test")) == 0
    assert {"last.pt", "best.pt", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    printed = capsys.readouterr()
    assert "finished after" in printed.out and "val AUC" in printed.err
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "val" for r in log) == 2
    state = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert state["training"]["val_ids"] and state["training"]["config"]["lr"] == 1e-3

    # resume for one more epoch
    assert main(_args(drive_root, tiny_sam_checkpoint, out, "--val-split", "test", "--epochs", "3",
                      "--resume", str(out / "last.pt"))) == 0
    resumed = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert resumed["training"]["epoch"] == 3

    # the fine-tuned file segments through `retsam segment`
    from napari_retsam.data import open_dataset

    image_path = sorted((drive_root / "test" / "images").iterdir())[0]
    mask_out = tmp_path / "mask.png"
    assert main(["segment", "--image", str(image_path), "--out", str(mask_out), "--checkpoint",
                 str(tiny_sam_checkpoint), "--finetuned", str(out / "best.pt"), "--model-type", "tiny",
                 "--tile", "0", "--device", "cpu"]) == 0
    assert mask_out.is_file()
    assert open_dataset("drive", drive_root, split="test")[0].image.shape[:2]


def test_finetune_synthetic_only_and_bce(tiny_sam_checkpoint, tmp_path) -> None:
    from napari_retsam.data import write_synthetic_folder

    syn = write_synthetic_folder(tmp_path / "syn", 3, seed=2, size=64)
    code = main(["finetune", "--synthetic", str(syn), "--out", str(tmp_path / "o"), "--checkpoint",
                 str(tiny_sam_checkpoint), "--max-steps", "2", "--loss", "bsd+bce", "--tile", "32",
                 "--overlap", "8", "--device", "cpu", "--no-augment"])
    assert code == 0
    state = torch.load(tmp_path / "o" / "last.pt", map_location="cpu", weights_only=True)
    assert state["training"]["step"] == 2 and state["training"]["config"]["loss"] == "bsd+bce"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lr", "-1"], "lr must be a positive number"),
        (["--batch-size", "0"], "batch-size must be >= 1"),
        (["--resume", "/nonexistent/last.pt"], "does not exist"),
        (["--limit", "-2"], "limit must be >= 0"),
    ],
)
def test_bad_input_exits_2_with_one_line(drive_root, tiny_sam_checkpoint, tmp_path, capsys, extra, message) -> None:
    assert main(_args(drive_root, tiny_sam_checkpoint, tmp_path / "x", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("retsam: error:") and message in err[-1]


def test_mask_shape_mismatch_names_sample(tiny_sam_checkpoint, tmp_path, capsys) -> None:
    from PIL import Image

    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    import numpy as np

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "images" / "eye1.png")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(root / "masks" / "eye1.png")
    code = main(["finetune", "--dataset", "folder", "--root", str(root), "--split", "all", "--out",
                 str(tmp_path / "o"), "--checkpoint", str(tiny_sam_checkpoint), "--device", "cpu"])
    assert code == 2
    assert "eye1" in capsys.readouterr().err


def test_cli_module_imports_no_torch() -> None:
    import subprocess

    code = "import sys, napari_retsam.cli.finetune_cmd; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_no_fusion_flag_gives_plain_decoder_only_config() -> None:
    from napari_retsam.cli.finetune_cmd import _config
    from napari_retsam.cli.main import build_parser

    parser = build_parser()
    config = _config(parser.parse_args(["finetune", "--dataset", "drive", "--root", "R", "--out", "O",
                                        "--no-fusion"]), "cpu")
    assert config.fusion is False and config.pixel_branch == 0
    assert _config(parser.parse_args(["finetune", "--dataset", "drive", "--root", "R", "--out", "O"]), "cpu").fusion
    assert main(["finetune", "--dataset", "drive", "--root", "R", "--out", "O", "--no-fusion",
                 "--pixel-branch", "8"]) == 2  # one line: the pixel branch belongs to the fusion block
