"""Tests of ``retsam baseline`` (napari_retsam.cli.baseline_cmd)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_retsam.baseline import DEFAULT_THRESHOLD, frangi_segment
from napari_retsam.cli.main import main
from napari_retsam.data import compute_fov
from napari_retsam.data.synthetic import synthetic_fundus


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("baseline_cli")
    f = synthetic_fundus(seed=11, size=128)
    paths = {"image": root / "fundus.png", "fov": root / "fov.png", "root": root}
    Image.fromarray(f.image).save(paths["image"])
    Image.fromarray(f.fov.astype(np.uint8) * 255).save(paths["fov"])
    return paths


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_round_trip_with_computed_fov_and_npy_prob(sample_files, tmp_path, capsys) -> None:
    out, prob_out = tmp_path / "mask.png", tmp_path / "prob.npy"
    rc = main(["baseline", "--image", str(sample_files["image"]), "--out", str(out),
               "--prob-out", str(prob_out), "--json"])
    assert rc == 0
    image = _read(sample_files["image"])
    fov = compute_fov(image)
    prob, mask = frangi_segment(image, fov)
    written = _read(out)
    assert written.dtype == np.uint8 and set(np.unique(written).tolist()) <= {0, 255}
    assert np.array_equal(written == 255, mask)
    stored = np.load(prob_out)
    assert stored.dtype == np.float32 and np.array_equal(stored, prob)
    summary = json.loads(capsys.readouterr().out)
    assert summary["fov_computed"] is True
    assert summary["threshold"] == DEFAULT_THRESHOLD
    assert summary["vessel_pixels"] == int(mask.sum())
    assert summary["fov_pixels"] == int(fov.sum())
    assert summary["width"] == 128 and summary["height"] == 128
    assert summary["vessel_fraction"] == pytest.approx(mask.sum() / fov.sum())


def test_given_fov_threshold_and_png_prob(sample_files, tmp_path, capsys) -> None:
    out, prob_out = tmp_path / "mask.tif", tmp_path / "prob.png"
    rc = main(["baseline", "--image", str(sample_files["image"]), "--fov", str(sample_files["fov"]),
               "--out", str(out), "--prob-out", str(prob_out), "--threshold", "0.3"])
    assert rc == 0
    image = _read(sample_files["image"])
    fov = _read(sample_files["fov"]) > 0
    prob, mask = frangi_segment(image, fov, threshold=0.3)
    assert np.array_equal(_read(out) == 255, mask)
    assert np.array_equal(_read(prob_out), np.rint(prob * 255).astype(np.uint8))
    text = capsys.readouterr().out
    assert "vessel pixels" in text and "given FOV" in text and "0.3" in text


def test_runs_through_console_entry_without_torch_or_qt(sample_files, tmp_path) -> None:
    out = tmp_path / "m.png"
    code = (
        "import sys; from napari_retsam.cli.main import main; "
        f"rc = main(['baseline', '--image', {str(sample_files['image'])!r}, '--out', {str(out)!r}]); "
        "bad = [m for m in ('torch', 'napari', 'PyQt5', 'qtpy') if m in sys.modules]; "
        "print(bad); sys.exit(rc or (3 if bad else 0))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.exists()


def _expect_exit_2(argv: list[str], capsys, fragment: str) -> None:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("retsam: error:") and err.count("\n") == 1
    assert fragment in err


def test_missing_and_unreadable_image(tmp_path, capsys) -> None:
    _expect_exit_2(["baseline", "--image", str(tmp_path / "nope.png"), "--out", str(tmp_path / "m.png")],
                   capsys, "nope.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    _expect_exit_2(["baseline", "--image", str(junk), "--out", str(tmp_path / "m.png")], capsys, "junk.png")
    assert not (tmp_path / "m.png").exists()


def test_unwritable_or_bad_outputs(sample_files, tmp_path, capsys) -> None:
    img = str(sample_files["image"])
    _expect_exit_2(["baseline", "--image", img, "--out", str(tmp_path / "missing" / "m.png")],
                   capsys, "does not exist")
    _expect_exit_2(["baseline", "--image", img, "--out", str(tmp_path / "m.jpg")], capsys, ".png")
    _expect_exit_2(["baseline", "--image", img, "--out", str(tmp_path / "m.png"),
                    "--prob-out", str(tmp_path / "p.txt")], capsys, ".npy")
    _expect_exit_2(["baseline", "--image", img, "--out", str(tmp_path / "m.png"),
                    "--prob-out", str(tmp_path / "m.png")], capsys, "different")
    _expect_exit_2(["baseline", "--image", img, "--out", str(tmp_path)], capsys, "")


def test_bad_threshold_and_fov(sample_files, tmp_path, capsys) -> None:
    img = str(sample_files["image"])
    out = str(tmp_path / "m.png")
    _expect_exit_2(["baseline", "--image", img, "--out", out, "--threshold", "1.5"], capsys, "threshold")
    small_fov = tmp_path / "small_fov.png"
    Image.fromarray(np.full((20, 30), 255, np.uint8)).save(small_fov)
    _expect_exit_2(["baseline", "--image", img, "--out", out, "--fov", str(small_fov)], capsys, "30x20")
    empty_fov = tmp_path / "empty_fov.png"
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(empty_fov)
    _expect_exit_2(["baseline", "--image", img, "--out", out, "--fov", str(empty_fov)], capsys, "")


def test_dataset_mode_writes_evaluable_predictions(tmp_path, capsys) -> None:
    from napari_retsam.data import open_dataset
    from napari_retsam.data.synthetic import write_synthetic_folder

    root = write_synthetic_folder(tmp_path / "ds", n=2, seed=5, size=96)
    out_dir = tmp_path / "pred"
    rc = main(["baseline", "--dataset", "folder", "--root", str(root), "--split", "all",
               "--out-dir", str(out_dir), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_samples"] == 2 and [r["id"] for r in summary["samples"]] == ["synth_000", "synth_001"]
    for sample in open_dataset("folder", root, split="all"):
        prob, mask = frangi_segment(sample.image, sample.fov)
        assert np.array_equal(np.load(out_dir / f"{sample.id}.npy"), prob)
        assert np.array_equal(_read(out_dir / "masks" / f"{sample.id}.png") == 255, mask)
    # The folder is what `retsam evaluate` reads (probabilities preferred: AUC defined).
    rc = main(["evaluate", "--dataset", "folder", "--root", str(root), "--split", "all",
               "--pred", str(out_dir), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.5 < report["auc"] <= 1.0


def test_mode_errors(sample_files, tmp_path, capsys) -> None:
    img = str(sample_files["image"])
    _expect_exit_2(["baseline", "--image", img], capsys, "--out")
    _expect_exit_2(["baseline", "--out", str(tmp_path / "m.png")], capsys, "--image")
    _expect_exit_2(["baseline", "--image", img, "--out", str(tmp_path / "m.png"), "--dataset", "drive"],
                   capsys, "not both")
    _expect_exit_2(["baseline", "--dataset", "folder", "--root", str(tmp_path), "--out-dir", str(tmp_path / "o"),
                    "--prob-out", str(tmp_path / "p.npy")], capsys, "image mode")
    _expect_exit_2(["baseline", "--dataset", "folder", "--root", str(tmp_path / "missing"),
                    "--out-dir", str(tmp_path / "o")], capsys, "")
