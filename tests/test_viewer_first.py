"""The user's order of actions: the viewer first, then the plugin's real buttons.

A user starts napari (the OpenGL context exists, on Mesa with its ``libLLVM``
loaded), opens the sample, docks a widget and presses its button; only then
does torch run, and torch imports triton, whose own LLVM crashed the process
(SIGSEGV) before :mod:`napari_retsam._torch_runtime`. Each case runs in a fresh
subprocess (this file run as a script) so nothing torch-related is loaded before
the viewer: Segment, Fine-tune Train and GAN Train, each with tiny settings,
must exit cleanly and leave their output layers/files; and Segment once more
with nothing changed, i.e. the real bundled LiteMedSAM as a user first meets it.

Checked by hand: with ``RETSAM_TRITON_PRELOAD=0`` (the guard's opt-out) every
case dies with SIGSEGV under Xvfb.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SAMPLE_IMAGE = "synthetic fundus"
SAMPLE_GOLD = "synthetic vessels (gold)"
TIMEOUT_S = 120


# --------------------------------------------------------------------------- the subprocess
def _wait(condition, what: str, timeout: float = 90.0) -> None:
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        QApplication.processEvents()
        time.sleep(0.02)


def _choose(combo, text: str) -> None:
    """Select ``text`` in a combo box (adding it when the list does not offer it, e.g. the test-only tiny model)."""
    if combo.findText(text) < 0:
        combo.addItem(text)
    combo.setCurrentText(text)
    assert combo.currentText() == text, (combo.currentText(), text)


def _viewer_with_sample():
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-retsam", "synthetic_fundus")
    for _ in range(30):  # let the canvas draw: the OpenGL context (Mesa's libLLVM) is now loaded
        QApplication.processEvents()
        time.sleep(0.01)
    assert "triton" not in sys.modules, "triton was imported before the viewer existed"
    assert SAMPLE_IMAGE in viewer.layers
    return viewer


def _dock(viewer, name: str):
    _, widget = viewer.window.add_plugin_dock_widget("napari-retsam", name)
    return widget


def _segment(viewer, tmp: Path, checkpoint: str) -> None:
    import numpy as np

    widget = _dock(viewer, "SAM segmentation")
    _choose(widget.image_combo, SAMPLE_IMAGE)
    _choose(widget.model_combo, "tiny")
    widget.checkpoint_edit.setText(checkpoint)
    widget.device_combo.setCurrentText("cpu")
    widget.tile_spin.setValue(0)
    widget.new_box_button.click()
    shapes = viewer.layers[widget.shapes_combo.currentText()]
    shapes.add_rectangles(np.array([[100.0, 120.0], [100.0, 400.0], [380.0, 400.0], [380.0, 120.0]]))
    widget.segment_button.click()
    _wait(lambda: widget.busy, "the worker to start", 5)
    _wait(lambda: not widget.busy, "SAM to finish")
    status = widget.status_label.text()
    assert status.startswith("done"), status
    for name in (f"{SAMPLE_IMAGE} SAM mask", f"{SAMPLE_IMAGE} SAM prob"):
        assert name in viewer.layers, (name, [ly.name for ly in viewer.layers])
        assert viewer.layers[name].data.shape == viewer.layers[SAMPLE_IMAGE].data.shape[:2]


def _segment_default(viewer, tmp: Path, _unused: str) -> None:
    """The first-day path of the README with the REAL bundled LiteMedSAM and no setting changed.

    Open the sample, New box layer, draw a rectangle, Segment: the defaults (the
    embedded lite_medsam weights, tiling, precision) must give a result with no
    file dialog and no network. Zero-shot LiteMedSAM segments the object in the
    box (the fundus), so the check is that a real probability map came back, not
    vessel quality.
    """
    import numpy as np

    from napari_retsam.options import DEFAULT_MODEL_TYPE

    widget = _dock(viewer, "SAM segmentation")
    assert widget.model_combo.currentText() == DEFAULT_MODEL_TYPE == "lite_medsam"
    assert widget.checkpoint_edit.text() == ""
    widget.new_box_button.click()
    shapes = viewer.layers[widget.shapes_combo.currentText()]
    shapes.add_rectangles(np.array([[60.0, 60.0], [60.0, 300.0], [300.0, 300.0], [300.0, 60.0]]))
    widget.segment_button.click()
    _wait(lambda: widget.busy, "the worker to start", 5)
    _wait(lambda: not widget.busy, "LiteMedSAM to finish", TIMEOUT_S - 20)
    status = widget.status_label.text()
    assert status.startswith("done"), status
    prob = np.asarray(viewer.layers[f"{SAMPLE_IMAGE} SAM prob"].data, dtype=np.float32)
    mask = np.asarray(viewer.layers[f"{SAMPLE_IMAGE} SAM mask"].data)
    inside = prob[60:300, 60:300]
    assert np.isfinite(prob).all() and 0.0 <= prob.min() and prob.max() <= 1.0
    assert inside.std() > 0.05, "a flat probability map: not a real model's output"
    assert prob[320:, 320:].max() == 0.0, "pixels outside the box got a probability"
    assert 0 < (mask[60:300, 60:300] > 0).mean() < 1


def _finetune(viewer, tmp: Path, checkpoint: str) -> None:
    widget = _dock(viewer, "Fine-tune SAM")
    widget.torch_threads = 1
    _choose(widget.image_combo, SAMPLE_IMAGE)
    _choose(widget.labels_combo, SAMPLE_GOLD)
    widget.add_pair_button.click()
    assert widget.pairs_list.count() == 1
    _choose(widget.model_type_combo, "tiny")
    widget.checkpoint_edit.setText(checkpoint)
    widget.out_edit.setText(str(tmp / "finetune"))
    widget.device_combo.setCurrentText("cpu")
    widget.epochs_spin.setValue(1)
    widget.batch_spin.setValue(1)
    widget.views_spin.setValue(1)
    widget.tile_spin.setValue(0)
    widget.val_fraction.setValue(0.0)
    widget.train_button.click()
    _wait(lambda: widget._worker is not None, "the worker to start", 5)
    _wait(lambda: widget._worker is None, "fine-tuning to finish")
    result = widget.last_result
    assert result is not None and result.status == "finished", (result, widget.status_label.text())
    assert (tmp / "finetune" / "last.pt").is_file()


def _gan(viewer, tmp: Path, folder: str) -> None:
    widget = _dock(viewer, "GAN synthesis")
    widget.dataset_combo.setCurrentText("folder")
    widget.root_edit.setText(folder)
    widget.split_combo.setCurrentText("all")
    widget.out_edit.setText(str(tmp / "gan"))
    widget.size_combo.setCurrentText("32")
    widget.iterations_spin.setValue(2)
    widget.batch_spin.setValue(1)
    widget.scales_spin.setValue(1)
    widget.sample_every_spin.setValue(1)
    widget.train_button.click()
    _wait(lambda: widget.train_worker is not None, "the worker to start", 5)
    _wait(lambda: widget.train_worker is None, "GAN training to finish")
    result = widget.last_train_result
    assert result is not None and result["iteration"] == 2, (result, widget.train_status.text())
    assert "GAN training preview" in viewer.layers
    assert Path(result["generator"]).is_file()


def _main(case: str, tmp: str, resource: str) -> int:
    viewer = _viewer_with_sample()
    {"segment": _segment, "segment_default": _segment_default, "finetune": _finetune, "gan": _gan}[case](viewer, Path(tmp), resource)
    print("layers:", [layer.name for layer in viewer.layers], flush=True)
    viewer.close()
    print(f"{case}: OK", flush=True)
    return 0


# --------------------------------------------------------------------------- the tests
CASES = ("segment", "segment_default", "finetune", "gan")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_sam_checkpoint: Path) -> dict[str, tuple[Path, subprocess.Popen]]:
    """The three cases started at once (each its own process), so their start-up overlaps."""
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs an X display (pytest-xvfb provides one)")
    from napari_retsam.data import write_synthetic_folder

    gan_data = write_synthetic_folder(tmp_path_factory.mktemp("viewer_first_gan"), 2, seed=0, size=64)
    started = {}
    for case in CASES:
        tmp = tmp_path_factory.mktemp(f"viewer_first_{case}")
        env = dict(os.environ)
        env.pop("RETSAM_TRITON_PRELOAD", None)  # the fix under test must be on
        env.pop("QT_QPA_PLATFORM", None)  # offscreen has no OpenGL canvas: the crash needs the real one
        env.update(OMP_NUM_THREADS="1", RETSAM_CACHE=str(tmp / "cache"), NAPARI_CONFIG=str(tmp / "napari.yaml"))
        resource = str(gan_data if case == "gan" else tiny_sam_checkpoint)
        started[case] = (tmp, subprocess.Popen([sys.executable, __file__, case, str(tmp), resource], env=env,
                                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    yield started
    for _, proc in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.napari
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Mesa/triton clash is Linux-only")
@pytest.mark.parametrize("case", CASES)
def test_viewer_first_then_button(case: str, runs: dict[str, tuple[Path, subprocess.Popen]]) -> None:
    _, proc = runs[case]
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"{case}: no result within {TIMEOUT_S} s\n{output[-4000:]}")
    assert proc.returncode == 0, f"{case}: exit code {proc.returncode} (-11 = SIGSEGV)\n{output[-4000:]}"
    assert f"{case}: OK" in output, output[-4000:]


def _guard_in_subprocess(code: str, **env: str) -> str:
    full = dict(os.environ)
    full.pop("RETSAM_TRITON_PRELOAD", None)
    full.update(env)
    prelude = "from napari_retsam._torch_runtime import prepare_torch_runtime as p, triton_library as t\n"
    return subprocess.run([sys.executable, "-c", prelude + code], env=full, capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RTLD_DEEPBIND is Linux-only")
def test_guard_results_and_opt_out() -> None:
    from napari_retsam._torch_runtime import triton_library

    if triton_library() is None:
        assert _guard_in_subprocess("print(p())") == "no triton"
        return
    # once per process, the library really mapped, no module faked
    out = _guard_in_subprocess(
        "import sys\n"
        "a = p(); b = p()\n"
        "maps = open('/proc/self/maps').read()\n"
        "print(a, b, str(t()) in maps, 'triton' in sys.modules)"
    )
    assert out == "preloaded preloaded True False"
    assert _guard_in_subprocess("import sys; print(p(), 'triton' in sys.modules)",
                                RETSAM_TRITON_PRELOAD="0") == "disabled False"
    assert _guard_in_subprocess("import triton; print(p())") == "already imported"


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:4]))
