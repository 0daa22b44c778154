"""``retsam segment`` end to end with the tiny checkpoint (exit 0) and bad input (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from napari_retsam.cli.main import main


@pytest.fixture(scope="module")
def fundus_png(tmp_path_factory):
    from napari_retsam.data import synthetic_fundus

    sample = synthetic_fundus(seed=3, size=96)
    path = tmp_path_factory.mktemp("seg_cli") / "fundus.png"
    Image.fromarray(sample.image).save(path)
    return path, sample


def test_segment_with_boxes_writes_mask_and_prob(tiny_sam_checkpoint, fundus_png, tmp_path, capsys):
    path, sample = fundus_png
    out, prob = tmp_path / "mask.png", tmp_path / "prob.npy"
    code = main([
        "segment", "--image", str(path), "--checkpoint", str(tiny_sam_checkpoint), "--box", "10,12,80,70",
        "--box=-5,40,50,200", "--tile", "64", "--overlap", "16", "--device", "cpu",
        "--out", str(out), "--prob-out", str(prob), "--json",
    ])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model_type"] == "tiny" and summary["mode"] == "tiled"
    assert summary["boxes"] == [[10, 12, 80, 70], [0, 40, 50, 95]]  # second box clipped
    from napari_retsam.sam import Segmenter, load_sam

    expected = Segmenter(load_sam(tiny_sam_checkpoint, device="cpu")).segment(
        sample.image, [[10, 12, 80, 70], [-5, 40, 50, 200]], tile=64, overlap=16
    )
    probs = np.load(prob)
    assert probs.dtype == np.float32 and probs.shape == (96, 96)
    np.testing.assert_allclose(probs, expected.prob, atol=1e-6)
    mask = np.asarray(Image.open(out))
    assert set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 255, expected.mask)
    assert summary["vessel_pixels"] == int(expected.mask.sum())


def test_segment_default_box_is_fov_bounding_box(tiny_sam_checkpoint, tiny_finetuned_checkpoint, fundus_png, tmp_path, capsys):
    from napari_retsam.data import compute_fov

    path, sample = fundus_png
    code = main([
        "segment", "--image", str(path), "--checkpoint", str(tiny_sam_checkpoint), "--finetuned",
        str(tiny_finetuned_checkpoint), "--tile", "0", "--out", str(tmp_path / "m.tif"), "--json",
    ])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    fov = compute_fov(sample.image)
    rows, cols = np.nonzero(fov.any(axis=1))[0], np.nonzero(fov.any(axis=0))[0]
    assert summary["box_source"] == "fov" and summary["mode"] == "whole-image"
    assert summary["boxes"] == [[cols[0], rows[0], cols[-1], rows[-1]]]
    assert summary["finetuned"] == str(tiny_finetuned_checkpoint)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--box", "200,200,300,300"], "wholly outside"),
        (["--box", "10,10,10,50"], "zero area"),
        (["--tile", "8"], "--tile must be"),
        (["--tile", "64", "--overlap", "64"], "--overlap"),
        (["--model-type", "vit_b"], "does not fit model type vit_b"),
        (["--device", "quantum"], "unknown device"),
    ],
)
def test_segment_bad_input_exit_2(tiny_sam_checkpoint, fundus_png, tmp_path, capsys, extra, message):
    path, _ = fundus_png
    code = main(["segment", "--image", str(path), "--checkpoint", str(tiny_sam_checkpoint),
                 "--out", str(tmp_path / "m.png"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "m.png").exists()


def test_segment_bad_files_exit_2(tiny_sam_checkpoint, fundus_png, tmp_path, capsys, offline_sam):
    path, _ = fundus_png
    cases = [
        (["--image", str(tmp_path / "nope.png"), "--checkpoint", str(tiny_sam_checkpoint), "--out", str(tmp_path / "m.png")], "nope.png"),
        (["--image", str(path), "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "m.png")], "does not exist"),
        (["--image", str(path), "--checkpoint", str(tiny_sam_checkpoint), "--out", str(tmp_path / "m.jpg")], "must end in"),
        (["--image", str(path), "--model-type", "vit_b", "--out", str(tmp_path / "m.png")],
         "sam_vit_b_01ec64.pth"),  # offline, nothing cached
    ]
    for args, message in cases:
        code = main(["segment", *args])
        err = capsys.readouterr().err
        assert code == 2, args
        assert message in err and err.startswith("retsam: error:"), err


def test_malformed_box_is_a_usage_error(fundus_png, tmp_path, capsys):
    path, _ = fundus_png
    with pytest.raises(SystemExit) as exc:
        main(["segment", "--image", str(path), "--box", "1,2,3", "--out", str(tmp_path / "m.png")])
    assert exc.value.code == 2 and "x0,y0,x1,y1" in capsys.readouterr().err


def test_command_module_imports_no_torch():
    code = "import sys, napari_retsam.cli.segment_cmd; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_first_use_downloads_with_progress_then_uses_the_cache(tiny_sam_checkpoint, fundus_png, tmp_path, capsys,
                                                               monkeypatch):
    """The whole first-use path, served from a local file:// URL instead of the release server."""
    import hashlib

    from napari_retsam.sam import weight_cache

    monkeypatch.setenv("RETSAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RETSAM_OFFLINE", raising=False)
    data = tiny_sam_checkpoint.read_bytes()
    info = weight_cache.CheckpointInfo("tiny", tiny_sam_checkpoint.as_uri(), hashlib.md5(data).hexdigest())
    monkeypatch.setitem(weight_cache.OFFICIAL_CHECKPOINTS, "tiny", info)
    path, _ = fundus_png
    args = ["segment", "--image", str(path), "--model-type", "tiny", "--tile", "0", "--out", str(tmp_path / "m.png")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"downloading {tiny_sam_checkpoint.name}" in err
    cached = tmp_path / "cache" / "checkpoints" / tiny_sam_checkpoint.name
    assert cached.read_bytes() == data
    assert main(args) == 0
    assert "downloading" not in capsys.readouterr().err  # second run: from the cache


def test_dataset_mode_segments_every_sample_for_evaluate(tiny_sam_checkpoint, tmp_path, capsys):
    """One model load for a whole split; the files are what `retsam evaluate` scores, each the
    Segmenter's output for the sample's FOV bounding box (the benchmark's protocol)."""
    from napari_retsam.data import mask_bounding_box, open_dataset
    from napari_retsam.data.synthetic import write_synthetic_folder
    from napari_retsam.sam import Segmenter, load_sam

    root = write_synthetic_folder(tmp_path / "ds", n=2, seed=7, size=96)
    out_dir = tmp_path / "pred"
    code = main(["segment", "--dataset", "folder", "--root", str(root), "--split", "all", "--out-dir", str(out_dir),
                 "--checkpoint", str(tiny_sam_checkpoint), "--tile", "64", "--overlap", "16", "--device", "cpu",
                 "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_samples"] == 2 and summary["model_type"] == "tiny" and summary["mode"] == "tiled"
    assert [r["id"] for r in summary["samples"]] == ["synth_000", "synth_001"]
    assert "bounding box of its FOV" in summary["prompt"]
    segmenter = Segmenter(load_sam(tiny_sam_checkpoint, device="cpu"))
    for sample in open_dataset("folder", root, split="all"):
        expected = segmenter.segment(sample.image, [mask_bounding_box(sample.fov)], tile=64, overlap=16)
        prob = np.load(out_dir / f"{sample.id}.npy")
        assert prob.dtype == np.float32 and prob.shape == sample.image.shape[:2]
        np.testing.assert_allclose(prob, expected.prob, atol=1e-6)
        assert np.array_equal(np.asarray(Image.open(out_dir / "masks" / f"{sample.id}.png")) == 255, expected.mask)
    code = main(["evaluate", "--dataset", "folder", "--root", str(root), "--split", "all", "--pred", str(out_dir),
                 "--json"])
    assert code == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["auc"] <= 1.0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--image", "x.png", "--out", "m.png"], "not both"),
        (["--box", "1,2,30,40"], "are for image mode"),
        (["--prob-out", "p.npy"], "are for image mode"),
        (["--out", "m.png"], "are for image mode"),
    ],
)
def test_dataset_mode_flag_errors_exit_2(tiny_sam_checkpoint, tmp_path, capsys, extra, message):
    from napari_retsam.data.synthetic import write_synthetic_folder

    root = write_synthetic_folder(tmp_path / "ds", n=1, seed=7, size=64)
    code = main(["segment", "--dataset", "folder", "--root", str(root), "--split", "all",
                 "--out-dir", str(tmp_path / "pred"), "--checkpoint", str(tiny_sam_checkpoint), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "pred").exists()


def test_dataset_mode_never_writes_into_the_inputs(tiny_sam_checkpoint, tmp_path, capsys):
    from napari_retsam.data.synthetic import write_synthetic_folder

    root = write_synthetic_folder(tmp_path / "ds", n=1, seed=7, size=64)
    before = sorted(p.name for p in (root / "images").iterdir())
    code = main(["segment", "--dataset", "folder", "--root", str(root), "--split", "all",
                 "--out-dir", str(root / "images"), "--checkpoint", str(tiny_sam_checkpoint)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("retsam: error:") and err.count("\n") == 1
    assert sorted(p.name for p in (root / "images").iterdir()) == before
    code = main(["segment", "--image", "x.png"])
    assert code == 2 and "--out" in capsys.readouterr().err


def test_dataset_mode_keeps_an_earlier_run_unless_overwrite(tiny_sam_checkpoint, tmp_path, capsys):
    from napari_retsam.data.synthetic import write_synthetic_folder

    root = write_synthetic_folder(tmp_path / "ds", n=1, seed=7, size=64)
    args = ["segment", "--dataset", "folder", "--root", str(root), "--split", "all", "--out-dir", str(tmp_path / "pred"),
            "--checkpoint", str(tiny_sam_checkpoint), "--tile", "0"]
    assert main(args) == 0
    capsys.readouterr()
    earlier = tmp_path / "pred" / "synth_000.npy"
    earlier.write_bytes(b"an earlier run's file")
    code = main([*args, "--tile", "64"])
    err = capsys.readouterr().err
    assert code == 2 and "already holds predictions" in err and err.count("\n") == 1
    assert earlier.read_bytes() == b"an earlier run's file"
    assert main([*args, "--overwrite"]) == 0
    assert np.load(earlier).shape == (64, 64)
    capsys.readouterr()
    assert main(["baseline", "--dataset", "folder", "--root", str(root), "--split", "all",
                 "--out-dir", str(tmp_path / "pred")]) == 2  # the same rule for the Frangi baseline
    assert "already holds predictions" in capsys.readouterr().err
    assert main(["segment", "--image", "x.png", "--out", str(tmp_path / "m.png"), "--overwrite"]) == 2
    assert "dataset mode" in capsys.readouterr().err


def test_an_image_without_a_field_of_view_needs_a_box(tiny_sam_checkpoint, tmp_path, capsys):
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(black)
    code = main(["segment", "--image", str(black), "--checkpoint", str(tiny_sam_checkpoint),
                 "--out", str(tmp_path / "m.png")])
    err = capsys.readouterr().err
    assert code == 2 and "field of view" in err and err.count("\n") == 1
    assert not (tmp_path / "m.png").exists()
