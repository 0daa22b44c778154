"""``retsam data info``: JSON figures on the fixtures, table output, bad input -> exit 2."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_retsam.cli import main as cli_main


@pytest.fixture
def retsam(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run the real ``retsam`` entry point with only the data command registered (isolates
    these tests from other commands); returns ``(exit code, stdout, stderr)``."""
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("napari_retsam.cli.data_cmd",))

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli_main.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _pil(path: Path) -> np.ndarray:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return np.asarray(Image.open(io.BytesIO(data)))


def test_info_json_drive_counts(retsam, drive_root: Path) -> None:
    code, out, err = retsam("data", "info", "--dataset", "drive", "--root", drive_root, "--json")
    assert code == 0 and err == ""
    info = json.loads(out)
    fov = vessels = 0
    for n in (1, 2, 3):  # counted independently with Pillow from the published files
        f = _pil(drive_root / f"test/mask/{n:02d}_test_mask.gif") == 255
        g = _pil(drive_root / f"test/1st_manual/{n:02d}_manual1.gif") == 255
        fov += int(f.sum())
        vessels += int((g & f).sum())
    assert info["n_samples"] == 3
    assert info["fov_pixels"] == fov and info["vessel_pixels"] == vessels
    assert info["vessel_fraction"] == pytest.approx(vessels / fov)
    assert info["ids"] == ["01_test", "02_test", "03_test"]
    assert info["image_size"] == [48, 44] and info["fov_computed"] == 0
    assert info["split"] == "test" and info["annotator"] == 1 and info["dataset"] == "drive"
    assert sum(p["fov_pixels"] for p in info["per_sample"]) == fov


def test_info_json_drive_annotator2_and_train(retsam, drive_root: Path) -> None:
    code, out, _ = retsam("data", "info", "--dataset", "drive", "--root", drive_root, "--annotator", "2", "--json")
    assert code == 0
    info = json.loads(out)
    expected = 0
    for n in (1, 2, 3):
        f = _pil(drive_root / f"test/mask/{n:02d}_test_mask.gif") == 255
        idx = _pil(drive_root / f"test/2nd_manual/{n:02d}_manual2.gif")  # palette indices 0/1
        expected += int(((idx == 1) & f).sum())
    assert info["vessel_pixels"] == expected and info["annotator"] == 2
    code, out, _ = retsam("data", "info", "--dataset", "drive", "--root", drive_root, "--split", "train", "--json")
    assert code == 0 and json.loads(out)["ids"] == ["21_training", "22_training"]


def test_info_json_stare_computed_fov_holds_all_vessels(retsam, stare_root: Path) -> None:
    code, out, _ = retsam("data", "info", "--dataset", "stare", "--root", stare_root, "--split", "all", "--json")
    assert code == 0
    info = json.loads(out)
    names = ["im0001.ah.ppm", "im0044.ah.pgm", "im0162.ah.ppm.gz", "im0324.ah.pgm.gz"]
    total = 0
    for name in names:
        a = _pil(stare_root / "labels-ah" / name)
        total += int(((a[..., 0] if a.ndim == 3 else a) == 255).sum())
    assert info["n_samples"] == 4 and info["fov_computed"] == 4
    assert info["vessel_pixels"] == total  # the computed FOV is widened to hold every gold pixel
    assert 0.4 * 4 * 60 * 70 < info["fov_pixels"] < 0.8 * 4 * 60 * 70


def test_info_json_chase_and_folder(retsam, chase_root: Path, folder_root: Path) -> None:
    code, out, _ = retsam("data", "info", "--dataset", "chase", "--root", chase_root, "--annotator", "2", "--json")
    info = json.loads(out)
    assert code == 0 and info["ids"] == ["Image_11L", "Image_14R"]
    total = sum(int((_pil(chase_root / f"{i}_2ndHO.png") == 255).sum()) for i in info["ids"])
    assert info["vessel_pixels"] == total

    code, out, _ = retsam("data", "info", "--dataset", "folder", "--root", folder_root, "--json")
    info = json.loads(out)
    fovs = [_pil(folder_root / "fov/a.png") == 255, _pil(folder_root / "fov/b.png") == 255, np.load(folder_root / "fov/c.npy")]
    golds = [_pil(folder_root / "masks/a.png") == 255, _pil(folder_root / "masks/b.gif") == 255, np.load(folder_root / "masks/c.npy")]
    assert code == 0 and info["image_size"] is None and info["image_sizes"] == [[40, 48], [52, 44]]
    assert info["fov_pixels"] == sum(int(f.sum()) for f in fovs)
    assert info["vessel_pixels"] == sum(int((g & f).sum()) for g, f in zip(golds, fovs))


def test_info_table(retsam, drive_root: Path) -> None:
    code, out, _ = retsam("data", "info", "--dataset", "drive", "--root", drive_root)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("drive (") and "3 samples" in lines[0] and "48×44" in lines[0]
    assert [ln.split()[0] for ln in lines[2:]] == ["01_test", "02_test", "03_test", "total"]
    assert "shipped" in lines[2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "drive", "--root", "{missing}"], "DRIVE folder not found"),
        (["--dataset", "hrf", "--root", "{drive}"], "unknown dataset 'hrf'"),
        (["--dataset", "drive", "--root", "{drive}", "--split", "val"], "unknown split 'val'"),
        (["--dataset", "drive", "--root", "{drive}", "--annotator", "3"], "--annotator must be 1 or 2"),
        (["--dataset", "drive", "--root", "{drive}", "--split", "train", "--annotator", "2"], "only for the test split"),
        (["--root", "{drive}"], "needs --dataset"),
        (["--dataset", "drive"], "needs --root"),
        (["--dataset", "stare", "--root", "{drive}"], "STARE images: folder"),
    ],
)
def test_bad_input_exits_2_with_one_line(retsam, drive_root: Path, tmp_path: Path, argv: list[str], message: str) -> None:
    argv = [a.format(missing=tmp_path / "missing", drive=drive_root) for a in argv]
    code, out, err = retsam("data", "info", *argv)
    assert code == 2 and out == ""
    assert err.startswith("retsam: error: ") and err.count("\n") == 1
    assert message in err


def test_missing_file_exit_2_names_it(retsam, drive_root: Path) -> None:
    (drive_root / "test/mask/03_test_mask.gif").unlink()
    code, _, err = retsam("data", "info", "--dataset", "drive", "--root", drive_root, "--json")
    assert code == 2 and "03_test" in err and err.count("\n") == 1


def test_unreadable_image_exit_2(retsam, chase_root: Path) -> None:
    (chase_root / "Image_14R.jpg").write_bytes(b"\xff\xd8 broken jpeg")
    code, _, err = retsam("data", "info", "--dataset", "chase", "--root", chase_root)
    assert code == 2 and "Image_14R.jpg" in err and err.count("\n") == 1


def test_real_entry_point_in_subprocess(drive_root: Path) -> None:
    """``python -m napari_retsam data info`` with every command registered, no torch imported."""
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['retsam', 'data', 'info', '--dataset', 'drive', '--root', {str(drive_root)!r}, '--json']\n"
        "try:\n"
        "    runpy.run_module('napari_retsam', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, last = proc.stdout.strip().splitlines()[0], proc.stdout.strip().splitlines()[-1]
    assert json.loads(first)["n_samples"] == 3
    assert last == "NOTORCH"


def test_info_folder_without_annotations(retsam, folder_root_nofov: Path) -> None:
    import shutil

    shutil.rmtree(folder_root_nofov / "masks")
    code, out, _ = retsam("data", "info", "--dataset", "folder", "--root", folder_root_nofov, "--json")
    info = json.loads(out)
    assert code == 0 and info["has_gold"] is False
    assert info["vessel_pixels"] is None and info["vessel_fraction"] is None
    assert info["fov_computed"] == 3 and info["fov_pixels"] > 0
    code, out, _ = retsam("data", "info", "--dataset", "folder", "--root", folder_root_nofov)
    assert code == 0 and "n/a" in out.splitlines()[-1]
