"""Ctrl-C during ``retsam gan train`` and ``retsam finetune``: a clean stop that saves and says how to resume.

Each command runs as a real process; once it reports progress it gets SIGINT,
as a terminal sends on Ctrl-C. The first one must stop the run after its
current step, write ``last.pt``, print the ``--resume`` hint on one line and
exit with 130; the saved state must continue with ``--resume``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(sys.platform.startswith("win"), reason="SIGINT to a child process is POSIX")


def _interrupt_after(argv: list[str], marker: str, timeout: float = 240.0) -> tuple[int, str]:
    """Start ``python -m napari_retsam argv``, send SIGINT once ``marker`` appears in its output."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "napari_retsam", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                proc.send_signal(signal.SIGINT)
                break
            assert time.monotonic() < deadline, "".join(lines[-20:])
        rest, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines) + rest


def test_ctrl_c_stops_gan_training_with_a_checkpoint(gan_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = _interrupt_after(
        ["gan", "train", "--dataset", "folder", "--root", str(gan_folder), "--split", "all", "--out", str(out),
         "--mode", "paired", "--unit", "image", "--no-amp", "--size", "32", "--iterations", "100000",
         "--batch-size", "1", "--scales", "1", "--g-channels", "4", "--d-channels", "4",
         "--checkpoint-every", "100000", "--sample-every", "0"],
        marker="iteration 1/")
    assert code == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "stopping GAN training after the current step" in output
    assert f"continue with --resume {out / 'last.pt'}" in output
    stopped_at = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["iteration"]
    assert 1 <= stopped_at < 100000


def test_ctrl_c_stops_finetuning_with_a_checkpoint(drive_root: Path, tiny_sam_checkpoint: Path,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "ft"
    common = ["finetune", "--dataset", "drive", "--root", str(drive_root), "--out", str(out),
              "--checkpoint", str(tiny_sam_checkpoint), "--model-type", "tiny", "--batch-size", "1",
              "--device", "cpu", "--views", "1", "--tile", "0", "--val-fraction", "0"]
    code, output = _interrupt_after([*common, "--epochs", "1000"], marker="step")
    assert code == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "stopping fine-tuning after the current step" in output
    assert f"continue with --resume {out / 'last.pt'}" in output
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["training"]
    assert state["epoch"] < 1000
    # the saved state continues
    done = subprocess.run([sys.executable, "-m", "napari_retsam", *common, "--epochs", str(state["epoch"] + 1),
                           "--resume", str(out / "last.pt")], capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_stop_before_the_first_step_says_nothing_was_saved(drive_root: Path, tiny_sam_checkpoint: Path,
                                                              tmp_path: Path, capsys, monkeypatch) -> None:
    """Ctrl-C while the tiles are still being embedded: exit 130 and no ``--resume`` hint to a file
    that does not exist."""
    import contextlib

    from napari_retsam.cli import _interrupt
    from napari_retsam.cli.main import main

    monkeypatch.setattr(_interrupt, "stop_on_interrupt", lambda what: contextlib.nullcontext(lambda: True))
    out = tmp_path / "ft"
    code = main(["finetune", "--dataset", "drive", "--root", str(drive_root), "--out", str(out),
                 "--checkpoint", str(tiny_sam_checkpoint), "--model-type", "tiny", "--device", "cpu",
                 "--views", "1", "--tile", "0", "--val-fraction", "0", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 130, err
    assert "nothing saved" in err and "--resume" not in err
    assert not (out / "last.pt").exists()
