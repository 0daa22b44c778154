"""The package as users install it: wheel contents, manifest, entry points, CI.

The central check builds a real (non-editable) wheel offline, installs it into a
private folder and, in a fresh interpreter that sees that copy first (and not
this checkout's ``src``), runs ``npe2 validate napari-retsam --imports`` and
opens napari to read the plugin's entries in the Plugins menu.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

WIDGET_NAMES = {
    "SAM segmentation",
    "Fine-tune SAM",
    "GAN synthesis",
    "Metrics panel",
    "Frangi baseline",
}


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Build the wheel (no network, no build isolation) and install it into a folder."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(out), str(REPO)],
        check=True,
    )
    (wheel,) = out.glob("napari_retsam-*.whl")
    target = out / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(target), str(wheel)],
        check=True,
    )
    return wheel, target


def _isolated_env(target: Path) -> dict[str, str]:
    """Environment for ``python -S``: the installed copy first, then the
    interpreter's site-packages *without* processing ``.pth`` files, so this
    checkout's editable install (a ``.pth`` pointing at ``src``) is not seen."""
    site_dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), *sorted(site_dirs)])
    return env


def test_wheel_ships_manifest_as_a_real_file(installed_wheel: tuple[Path, Path]) -> None:
    wheel, _ = installed_wheel
    with zipfile.ZipFile(wheel) as zf:
        shipped = zf.read("napari_retsam/napari.yaml").decode()
        entry_points = next(n for n in zf.namelist() if n.endswith("entry_points.txt"))
        ep_text = zf.read(entry_points).decode()
    assert shipped == (REPO / "napari.yaml").read_text()
    assert "[napari.manifest]" in ep_text
    assert "napari-retsam = napari_retsam:napari.yaml" in ep_text
    assert "retsam = napari_retsam.cli.main:main" in ep_text


def test_installed_copy_validates_and_fills_the_plugins_menu(
    installed_wheel: tuple[Path, Path], tmp_path: Path
) -> None:
    _, target = installed_wheel
    script = tmp_path / "check.py"
    script.write_text(
        "import sys\n"
        "import napari_retsam\n"
        f"assert napari_retsam.__file__.startswith({str(target)!r}), napari_retsam.__file__\n"
        "from npe2.cli import app\n"
        "try:\n"
        "    app(['validate', 'napari-retsam', '--imports'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, f'npe2 validate failed: {exc.code}'\n"
        "import napari\n"
        "viewer = napari.Viewer(show=False)\n"
        "bar = viewer.window._qt_window.menuBar()\n"
        "menu = next(a.menu() for a in bar.actions() if a.text().replace('&', '') == 'Plugins')\n"
        "ours = next(a.menu() for a in menu.actions() if a.text() == 'RetSAM vessels')\n"
        "print('WIDGETS:' + '|'.join(a.text() for a in ours.actions()))\n"
        "viewer.close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", str(script)],
        env=_isolated_env(target),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "valid!" in result.stdout, result.stdout[-3000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("WIDGETS:"))
    assert set(line.removeprefix("WIDGETS:").split("|")) == WIDGET_NAMES


def test_manifest_commands_all_import() -> None:
    """Every python_name in napari.yaml resolves in this checkout."""
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(REPO / "napari.yaml")
    manifest.validate_imports()
    assert {w.display_name for w in manifest.contributions.widgets} == WIDGET_NAMES


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    test_cmd = next(b.strip() for b in blocks if "pytest" in b)
    assert test_cmd in ci.splitlines(), f"{test_cmd!r} is not a line of .ci/run"


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "napari_retsam", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "evaluate" in result.stdout


def test_pure_core_and_evaluate_do_not_import_torch_or_qt(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import napari_retsam.data, napari_retsam.metrics, napari_retsam.baseline\n"
        "from napari_retsam.cli.main import build_parser\n"
        "build_parser()\n"
        "heavy = [m for m in ('torch', 'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide6', 'vispy')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
