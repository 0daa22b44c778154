"""``retsam gan train|sample|report`` end to end on a tiny synthetic folder, and its bad-input exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_retsam.cli.main import main

TINY = ["--mode", "paired", "--unit", "image", "--no-amp", "--size", "32", "--iterations", "2", "--batch-size", "2", "--scales", "2", "--g-channels", "4",
        "--d-channels", "4", "--sample-every", "1", "--checkpoint-every", "1"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_train_sample_report_end_to_end(gan_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["gan", "train", "--dataset", "folder", "--root", str(gan_folder), "--split", "all",
                 "--out", str(out), *TINY]) == 0
    assert "generator checkpoint" in capsys.readouterr().out
    for name in ("last.pt", "generator_last.pt", "losses.jsonl", "config.json", "samples/iter_000002.png"):
        assert (out / name).is_file(), name
    gen = torch.load(out / "generator_last.pt", map_location="cpu", weights_only=True)
    assert gen["config"]["g_channels"] == 4 and gen["dataset"]["name"] == "folder"

    # resume to 3 iterations
    assert main(["gan", "train", "--dataset", "folder", "--root", str(gan_folder), "--split", "all",
                 "--out", str(out), *TINY[:7], "--iterations", "3", *TINY[9:], "--resume", str(out / "last.pt")]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 3

    args = ["gan", "sample", "--checkpoint", str(out / "generator_last.pt"), "--n", "3", "--seed", "4"]
    assert main([*args, "--out", str(tmp_path / "s1")]) == 0
    assert main([*args, "--out", str(tmp_path / "s2")]) == 0
    assert _files(tmp_path / "s1") == _files(tmp_path / "s2")
    assert main([*args, "--out", str(tmp_path / "s1")]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "s1"), "--overwrite"]) == 0

    capsys.readouterr()
    fig = tmp_path / "report.png"
    assert main(["gan", "report", "--checkpoint", str(out / "generator_last.pt"), "--dataset", "folder",
                 "--root", str(gan_folder), "--split", "all", "--n", "2", "--json", "--figure", str(fig)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_generated"] == 2 and "pairing_dice" in report["generated"]
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["gan", "report", "--checkpoint", str(out / "generator_last.pt"), "--dataset", "folder",
                 "--root", str(gan_folder), "--split", "all", "--n", "2"]) == 0
    assert "pairing Dice" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gan", "sample", "--checkpoint", "CKPT", "--n", "0", "--out", "OUT"], "--n must be >= 1"),
        (["gan", "sample", "--checkpoint", "CKPT", "--n", "-2", "--out", "OUT"], "--n must be >= 1"),
        (["gan", "sample", "--checkpoint", "CKPT", "--n", "2", "--seed", "1.5", "--out", "OUT"], "seed must be an integer"),
        (["gan", "sample", "--checkpoint", "CKPT", "--n", "two", "--out", "OUT"], "--n must be an integer"),
        (["gan", "sample", "--checkpoint", "missing.pt", "--n", "2", "--out", "OUT"], "not found"),
        (["gan", "sample", "--checkpoint", "IMGONLY", "--n", "2", "--out", "OUT"], "without vessel masks"),
        (["gan", "sample", "--checkpoint", "CKPT", "--n", "2", "--out", "OUT", "--device", "tpu"], "unknown device"),
        (["gan", "train", "--dataset", "folder", "--root", "FOLDER", "--split", "all", "--out", "OUT",
          "--size", "48"], "power of two"),
        (["gan", "train", "--dataset", "folder", "--root", "FOLDER", "--split", "all", "--out", "OUT",
          "--iterations", "0"], "--iterations must be >= 1"),
        (["gan", "train", "--dataset", "folder", "--root", "IMGFOLDER", "--split", "all", "--out", "OUT",
          "--size", "32"], "no vessel masks"),
        (["gan", "train", "--dataset", "folder", "--root", "FOLDER", "--split", "all", "--out", "OUT",
          "--resume", "CKPT", *TINY], "not a full GAN training state"),
        (["gan", "report", "--checkpoint", "CKPT", "--dataset", "folder", "--root", "IMGFOLDER", "--split", "all"],
         "no vessel masks"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, gan_checkpoint, gan_image_only_checkpoint, gan_folder,
                                         gan_image_only_folder, tmp_path: Path, capsys) -> None:
    subst = {"CKPT": str(gan_checkpoint), "IMGONLY": str(gan_image_only_checkpoint), "OUT": str(tmp_path / "o"),
             "FOLDER": str(gan_folder), "IMGFOLDER": str(gan_image_only_folder),
             "missing.pt": str(tmp_path / "missing.pt")}
    assert main([subst.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("retsam: error: ") and message in err
    assert len(err.splitlines()) == 1


def test_a_stopped_run_exits_130_with_a_resume_hint(gan_folder: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """A stop (Cancelled, last.pt written first) ends ``gan train`` like an interrupt: exit 130, and
    stderr says how to continue."""
    from napari_retsam.gan import train as gan_train

    real = gan_train.train_gan

    def stopping(*args, progress, should_stop, **kwargs):  # stop after the first iteration
        done = []
        return real(*args, progress=lambda *a: (done.append(a), progress(*a)),
                    should_stop=lambda: bool(done) or should_stop(), **kwargs)

    monkeypatch.setattr(gan_train, "train_gan", stopping)
    out = tmp_path / "run"
    assert main(["gan", "train", "--dataset", "folder", "--root", str(gan_folder), "--split", "all",
                 "--out", str(out), *TINY]) == 130
    err = capsys.readouterr().err
    assert "stopped at iteration 1" in err and f"--resume {out / 'last.pt'}" in err
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 1


def test_image_only_training_warns_and_records(gan_image_only_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "img"
    assert main(["gan", "train", "--dataset", "folder", "--root", str(gan_image_only_folder), "--split", "all",
                 "--out", str(out), *TINY]) == 0
    assert "no vessel masks" in capsys.readouterr().err
    assert torch.load(out / "generator_last.pt", weights_only=True)["has_masks"] is False


def test_gan_cmd_imports_no_torch() -> None:
    code = ("import sys; import napari_retsam.cli.gan_cmd, napari_retsam.gan, napari_retsam.gan.config; "
            "from napari_retsam.cli.main import build_parser; build_parser(); "
            "assert 'torch' not in sys.modules and 'napari' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
