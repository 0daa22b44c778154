"""``retsam evaluate``: JSON output against the Python API, and exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_retsam.cli.main import main
from napari_retsam.data import open_dataset
from napari_retsam.metrics import evaluate, evaluate_set, roc_auc

REQUIRED_KEYS = {"pa", "se", "sp", "auc", "f1", "iou", "mcc", "tp", "fp", "tn", "fn", "n_pixels", "protocol"}


def _png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["evaluate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _json(capsys, *argv: str) -> dict:
    code, out, err = _run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def _fails(capsys, *argv: str, match: str) -> str:
    code, out, err = _run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("retsam: error: "), err
    assert "Traceback" not in err
    assert match in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def single(tmp_path: Path) -> dict:
    """Probability map, gold and FOV of one 24 x 30 image as files."""
    rng = np.random.default_rng(3)
    gold = rng.random((24, 30)) < 0.2
    prob = np.clip(rng.random((24, 30)) * 0.7 + 0.4 * gold, 0, 1)
    fov = np.ones((24, 30), bool)
    fov[:, :4] = False
    np.save(tmp_path / "prob.npy", prob)
    return {
        "prob": prob,
        "gold": gold,
        "fov": fov,
        "prob_path": str(tmp_path / "prob.npy"),
        "gold_path": str(_png(tmp_path / "gold.png", gold.astype(np.uint8) * 255)),
        "fov_path": str(_png(tmp_path / "fov.png", fov.astype(np.uint8) * 255)),
        "dir": tmp_path,
    }


def test_single_image_json_matches_api(capsys, single) -> None:
    data = _json(capsys, "--pred", single["prob_path"], "--gold", single["gold_path"], "--fov", single["fov_path"])
    assert REQUIRED_KEYS <= set(data)
    expected = evaluate(single["prob"], single["gold"], single["fov"]).as_dict()
    for key in ("tp", "fp", "tn", "fn", "n_pixels"):
        assert data[key] == expected[key]
    for key in ("pa", "se", "sp", "precision", "f1", "iou", "mcc", "auc"):
        assert data[key] == pytest.approx(expected[key], abs=1e-12)
    assert data["n_pixels"] == int(single["fov"].sum())
    assert data["protocol"]["region"] == "fov"
    assert data["protocol"]["aggregation"] == "single image"
    assert data["protocol"]["threshold"] == 0.5


def test_single_image_threshold_and_whole_image(capsys, single) -> None:
    data = _json(capsys, "--pred", single["prob_path"], "--gold", single["gold_path"], "--threshold", "0.7")
    expected = evaluate(single["prob"], single["gold"], threshold=0.7)
    assert (data["tp"], data["fp"], data["tn"], data["fn"]) == (expected.tp, expected.fp, expected.tn, expected.fn)
    assert data["protocol"]["region"] == "whole image" and data["protocol"]["threshold"] == 0.7


def test_8bit_probability_and_binary_pngs(capsys, single) -> None:
    q = np.round(single["prob"] * 255).astype(np.uint8)
    prob_png = _png(single["dir"] / "prob8.png", q)
    data = _json(capsys, "--pred", str(prob_png), "--gold", single["gold_path"], "--fov", single["fov_path"])
    assert data["auc"] == pytest.approx(roc_auc(q, single["gold"], single["fov"]), abs=1e-12)
    assert data["tp"] == int(np.sum((q >= 127.5) & single["gold"] & single["fov"]))
    binary_png = _png(single["dir"] / "bin.png", (single["prob"] >= 0.5).astype(np.uint8) * 255)
    data = _json(capsys, "--pred", str(binary_png), "--gold", single["gold_path"])
    assert data["auc"] is None and "binary" in data["auc_note"]
    assert data["is_probability"] is False


def test_table_output_states_protocol(capsys, single) -> None:
    code, out, _ = _run(capsys, "--pred", single["prob_path"], "--gold", single["gold_path"], "--fov", single["fov_path"])
    assert code == 0
    assert out.startswith("protocol: inside the FOV; single image; threshold: prob >= 0.5")
    assert "pooled" in out and "AUC" in out and "TP " in out


def test_gold_class_from_label_image(capsys, single) -> None:
    labels = single["gold"].astype(np.uint8) * 2
    labels[0, :] = 1  # a third class
    path = _png(single["dir"] / "labels.png", labels)
    _fails(capsys, "--pred", single["prob_path"], "--gold", str(path), match="not binary")
    data = _json(capsys, "--pred", single["prob_path"], "--gold", str(path), "--gold-class", "2")
    expected = evaluate(single["prob"], labels, gold_class=2)
    assert data["tp"] == expected.tp and data["protocol"]["gold_class"] == 2


def test_sigmoid_for_logits(capsys, single) -> None:
    logits = np.log(np.clip(single["prob"], 1e-6, 1 - 1e-6) / np.clip(1 - single["prob"], 1e-6, 1))
    path = single["dir"] / "logits.npy"
    np.save(path, logits)
    _fails(capsys, "--pred", str(path), "--gold", single["gold_path"], match="[0, 1]")
    data = _json(capsys, "--pred", str(path), "--gold", single["gold_path"], "--sigmoid")
    assert data["auc"] == pytest.approx(roc_auc(logits, single["gold"]), abs=1e-12)
    assert data["protocol"]["sigmoid"] is True
    png = _png(single["dir"] / "p8.png", np.round(single["prob"] * 255).astype(np.uint8))
    _fails(capsys, "--pred", str(png), "--gold", single["gold_path"], "--sigmoid", match="--sigmoid")


def test_single_image_bad_input(capsys, single, tmp_path: Path) -> None:
    gold, prob_path = single["gold_path"], single["prob_path"]
    small = _png(tmp_path / "small.png", np.zeros((10, 10), np.uint8))
    _fails(capsys, "--pred", prob_path, "--gold", str(small), match="(24, 30) vs (10, 10)")
    empty_fov = _png(tmp_path / "nofov.png", np.zeros((24, 30), np.uint8))
    _fails(capsys, "--pred", prob_path, "--gold", gold, "--fov", str(empty_fov), match="FOV mask is empty")
    bad = single["prob"].copy()
    bad[2, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    _fails(capsys, "--pred", str(tmp_path / "nan.npy"), "--gold", gold, match="NaN")
    np.save(tmp_path / "big.npy", single["prob"] * 3)
    _fails(capsys, "--pred", str(tmp_path / "big.npy"), "--gold", gold, match="[0, 1]")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    _fails(capsys, "--pred", str(tmp_path / "broken.png"), "--gold", gold, match="cannot read")
    _fails(capsys, "--pred", prob_path, "--gold", str(tmp_path / "broken.png"), match="cannot read")
    _fails(capsys, "--pred", prob_path, "--gold", str(tmp_path / "absent.png"), match="not found")
    _fails(capsys, "--pred", str(tmp_path / "absent.npy"), "--gold", gold, match="not found")
    _fails(capsys, "--pred", prob_path, "--gold", gold, "--threshold", "2", match="threshold")
    _fails(capsys, "--pred", prob_path, match="--dataset and --root")
    _fails(capsys, "--pred", prob_path, "--gold", gold, "--dataset", "drive", match="not both")


# ---------------------------------------------------------------- dataset mode


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory) -> Path:
    from napari_retsam.data import write_synthetic_folder

    return write_synthetic_folder(tmp_path_factory.mktemp("folder_ds"), n=3, seed=5, size=64)


def _write_predictions(root: Path, out: Path, kind: str = "npy") -> tuple[list, list, list, list]:
    """Noisy probability maps for every sample; returns ids, preds, golds, fovs."""
    out.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    ids, preds, golds, fovs = [], [], [], []
    for sample in open_dataset("folder", root, split="all"):
        prob = np.clip(0.25 + 0.5 * sample.gold + rng.normal(0, 0.2, sample.gold.shape), 0, 1)
        if kind == "npy":
            np.save(out / f"{sample.id}.npy", prob.astype(np.float32))
            preds.append(prob.astype(np.float32))
        else:
            q = np.round(prob * 255).astype(np.uint8)
            _png(out / f"{sample.id}.png", q)
            preds.append(q / 255.0)
        ids.append(sample.id)
        golds.append(sample.gold)
        fovs.append(sample.fov)
    return ids, preds, golds, fovs


def test_dataset_mode_pooled_and_per_image(capsys, folder_dataset, tmp_path) -> None:
    ids, preds, golds, fovs = _write_predictions(folder_dataset, tmp_path / "pred")
    data = _json(
        capsys, "--dataset", "folder", "--root", str(folder_dataset), "--split", "all",
        "--pred", str(tmp_path / "pred"), "--per-image",
    )
    expected = evaluate_set(preds, golds, fovs)
    assert REQUIRED_KEYS <= set(data)
    assert data["tp"] == expected.pooled.tp and data["n_pixels"] == expected.pooled.n_pixels
    assert data["n_pixels"] == sum(int(f.sum()) for f in fovs)
    assert data["auc"] == pytest.approx(expected.pooled.auc, abs=1e-12)
    assert [row["id"] for row in data["per_image"]] == ids
    for row, m in zip(data["per_image"], expected.per_image):
        assert row["tp"] == m.tp and row["auc"] == pytest.approx(m.auc, abs=1e-12)
    assert data["mean"]["f1"] == pytest.approx(expected.mean["f1"], abs=1e-12)
    assert data["std"]["f1"] == pytest.approx(expected.std["f1"], abs=1e-12)
    protocol = data["protocol"]
    assert protocol["dataset"] == "folder" and protocol["split"] == "all" and protocol["annotator"] == 1
    assert protocol["region"] == "fov" and protocol["aggregation"].startswith("pooled + per-image")
    assert protocol["n_images"] == 3


def test_dataset_mode_8bit_set_and_whole_image(capsys, folder_dataset, tmp_path) -> None:
    ids, preds, golds, fovs = _write_predictions(folder_dataset, tmp_path / "pred8", kind="png")
    # one saturated map holding only 0 and 255 is still read as a probability map
    saturated = (preds[0] >= 0.5).astype(np.uint8) * 255
    _png(tmp_path / "pred8" / f"{ids[0]}.png", saturated)
    preds[0] = saturated / 255.0
    data = _json(
        capsys, "--dataset", "folder", "--root", str(folder_dataset), "--split", "all",
        "--pred", str(tmp_path / "pred8"), "--whole-image",
    )
    expected = evaluate_set(preds, golds)
    assert data["auc"] == pytest.approx(expected.pooled.auc, abs=1e-12)
    assert data["n_pixels"] == sum(g.size for g in golds)
    assert data["protocol"]["region"] == "whole image"
    assert "probability x 255" in data["protocol"]["fov_note"]
    assert "per_image" not in data


def test_dataset_mode_missing_and_extra_files(capsys, folder_dataset, tmp_path) -> None:
    ids, *_ = _write_predictions(folder_dataset, tmp_path / "pred")
    (tmp_path / "pred" / f"{ids[1]}.npy").unlink()
    message = _fails(
        capsys, "--dataset", "folder", "--root", str(folder_dataset), "--split", "all",
        "--pred", str(tmp_path / "pred"), match="no prediction file",
    )
    assert ids[1] in message and ids[0] not in message
    np.save(tmp_path / "pred" / f"{ids[1]}.npy", np.zeros((64, 64), np.float32))
    np.save(tmp_path / "pred" / "stranger.npy", np.zeros((64, 64), np.float32))
    code, out, err = _run(
        capsys, "--dataset", "folder", "--root", str(folder_dataset), "--split", "all",
        "--pred", str(tmp_path / "pred"), "--json",
    )
    assert code == 0 and "stranger.npy" in err and json.loads(out)["n_pixels"] > 0
    _png(tmp_path / "pred" / f"{ids[1]}.png", np.zeros((64, 64), np.uint8))
    _fails(
        capsys, "--dataset", "folder", "--root", str(folder_dataset), "--split", "all",
        "--pred", str(tmp_path / "pred"), match="several prediction files",
    )


def test_dataset_mode_bad_input(capsys, folder_dataset, tmp_path) -> None:
    ids, *_ = _write_predictions(folder_dataset, tmp_path / "pred")
    np.save(tmp_path / "pred" / f"{ids[2]}.npy", np.zeros((10, 12), np.float32))
    message = _fails(
        capsys, "--dataset", "folder", "--root", str(folder_dataset), "--split", "all",
        "--pred", str(tmp_path / "pred"), match="different shapes",
    )
    assert ids[2] in message and "(10, 12)" in message
    _fails(
        capsys, "--dataset", "folder", "--root", str(folder_dataset), "--pred", str(tmp_path / "nowhere"),
        "--split", "all", match="not found",
    )
    _fails(
        capsys, "--dataset", "folder", "--root", str(folder_dataset), "--pred", str(tmp_path / "pred"),
        "--fov", "x.png", match="single-image mode",
    )


def _main_in_fresh_interpreter(argv: list[str]) -> subprocess.CompletedProcess:
    """Run ``retsam <argv>`` through the real ``main`` in a fresh interpreter; exit code
    99 (and the list on stderr) when torch, napari, Qt or segment-anything got imported."""
    code = (
        "import sys\n"
        "from napari_retsam.cli.main import main\n"
        f"rc = main({[str(a) for a in argv]!r})\n"
        "heavy = sorted(k for k in sys.modules if k.split('.')[0] in "
        "('torch', 'torchvision', 'napari', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy', 'segment_anything'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(rc if not heavy else 99)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_cli_exit_code_and_no_heavy_imports(single) -> None:
    """Run the real command code path in a fresh interpreter; torch/napari/Qt stay unloaded."""
    result = _main_in_fresh_interpreter(["evaluate", "--pred", single["prob_path"], "--gold", single["gold_path"],
                                         "--json"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n_pixels"] == 24 * 30
    bad = subprocess.run(
        [sys.executable, "-m", "napari_retsam", "evaluate", "--pred", single["prob_path"],
         "--gold", str(single["dir"] / "missing.png")],
        capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith("retsam: error:")


@pytest.mark.parametrize(
    "fixture, name, split, annotator",
    [
        ("drive_root", "drive", "test", 1),
        ("drive_root", "drive", "test", 2),
        ("stare_root", "stare", "all", 2),
        ("chase_root", "chase", "test", 1),
        ("folder_root", "folder", "all", 1),
        ("folder_root_nofov", "folder", "all", 1),
    ],
)
def test_published_layouts(capsys, request, tmp_path, fixture, name, split, annotator) -> None:
    """Every dataset reader's layout: predictions by sample id, gold of the chosen annotator."""
    root = request.getfixturevalue(fixture)
    dataset = open_dataset(name, root, split=split, annotator=annotator)
    rng = np.random.default_rng(1)
    pred_dir = tmp_path / "preds"
    pred_dir.mkdir()
    preds, golds, fovs = [], [], []
    for sample in dataset:
        prob = np.clip(0.3 + 0.4 * sample.gold + rng.normal(0, 0.25, sample.gold.shape), 0, 1)
        np.save(pred_dir / f"{sample.id}.npy", prob)
        preds.append(prob)
        golds.append(sample.gold)
        fovs.append(sample.fov)
    data = _json(
        capsys, "--dataset", name, "--root", str(root), "--split", split,
        "--annotator", str(annotator), "--pred", str(pred_dir), "--per-image",
    )
    expected = evaluate_set(preds, golds, fovs)
    assert (data["tp"], data["fp"], data["tn"], data["fn"]) == (
        expected.pooled.tp, expected.pooled.fp, expected.pooled.tn, expected.pooled.fn
    )
    assert data["auc"] == pytest.approx(expected.pooled.auc, abs=1e-12)
    assert [row["id"] for row in data["per_image"]] == list(dataset.ids)
    assert data["protocol"]["annotator"] == annotator
    computed = any(sample.fov_computed for sample in dataset)
    assert ("FOV computed" in data["protocol"]["fov_note"]) == computed


def test_dataset_mode_imports_no_torch_napari_qt(stare_root, tmp_path) -> None:
    """Dataset mode (readers, computed FOV) in a fresh interpreter: no torch, napari or Qt."""
    pred_dir = tmp_path / "p"
    pred_dir.mkdir()
    for sample in open_dataset("stare", stare_root, split="all"):
        np.save(pred_dir / f"{sample.id}.npy", sample.gold * 0.8 + 0.1)
    result = _main_in_fresh_interpreter(["evaluate", "--dataset", "stare", "--root", str(stare_root), "--split", "all",
                                         "--pred", str(pred_dir), "--json", "--per-image"])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["auc"] == 1.0 and len(data["per_image"]) == 4


def test_wrong_prediction_folder_hints_at_other_ids(capsys, folder_dataset, tmp_path) -> None:
    pred_dir = tmp_path / "other"
    pred_dir.mkdir()
    np.save(pred_dir / "01_test.npy", np.zeros((64, 64), np.float32))
    message = _fails(
        capsys, "--dataset", "folder", "--root", str(folder_dataset), "--split", "all",
        "--pred", str(pred_dir), match="for 3 of 3 samples",
    )
    assert "other ids, e.g. 01_test.npy" in message
