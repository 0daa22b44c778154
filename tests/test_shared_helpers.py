"""The helpers several areas share: CLI output files, byte/.npy reading, torch checkpoints."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_retsam.cli._files import (
    MASK_FORMATS,
    PROB_FORMATS,
    check_mask_outputs,
    check_output,
    encode_array,
    write_mask,
    write_probability,
)
from napari_retsam.data.imageio import read_bytes, read_npy
from napari_retsam.errors import RetsamInputError
from napari_retsam.io_utils import load_torch_checkpoint

# -- cli/_files.py ---------------------------------------------------------------


def test_check_output_accepts_known_extensions_and_refuses_bad_paths(tmp_path: Path) -> None:
    assert check_output(str(tmp_path / "m.PNG"), MASK_FORMATS, "mask output") == tmp_path / "m.PNG"
    with pytest.raises(RetsamInputError, match=r"mask output .*m\.jpg must end in one of \.png, \.tif, \.tiff"):
        check_output(str(tmp_path / "m.jpg"), MASK_FORMATS, "mask output")
    with pytest.raises(RetsamInputError, match="folder .*nowhere does not exist"):
        check_output(str(tmp_path / "nowhere" / "m.png"), MASK_FORMATS, "mask output")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(RetsamInputError, match="it is a folder"):
        check_output(str(tmp_path / "d.png"), MASK_FORMATS, "mask output")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_check_output_refuses_a_read_only_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(RetsamInputError, match="is not writable"):
            check_output(str(ro / "m.png"), MASK_FORMATS, "mask output")
    finally:
        ro.chmod(0o700)


def test_check_mask_outputs_pairs(tmp_path: Path) -> None:
    out, prob = check_mask_outputs(str(tmp_path / "m.png"), None)
    assert out == tmp_path / "m.png" and prob is None
    out, prob = check_mask_outputs(str(tmp_path / "m.png"), str(tmp_path / "p.npy"))
    assert prob == tmp_path / "p.npy"
    with pytest.raises(RetsamInputError, match="--out and --prob-out must be different files"):
        check_mask_outputs(str(tmp_path / "m.png"), str(tmp_path / "." / "m.png"))
    with pytest.raises(RetsamInputError, match="probability output"):
        check_mask_outputs(str(tmp_path / "m.png"), str(tmp_path / "p.txt"))


def test_write_mask_and_probability_encodings(tmp_path: Path) -> None:
    mask = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    for ext in MASK_FORMATS:
        path = write_mask(tmp_path / f"m{ext}", mask)
        assert np.array_equal(np.asarray(Image.open(path)), mask)
    prob = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float64)
    stored = np.load(write_probability(tmp_path / "p.npy", prob))
    assert stored.dtype == np.float32 and np.array_equal(stored, prob.astype(np.float32))
    # 8-bit: round(255 p); 0.25 -> 63.75 -> 64, 0.5 -> 127.5 -> 128 (round half to even)
    png = np.asarray(Image.open(write_probability(tmp_path / "p.png", prob)))
    assert png.dtype == np.uint8 and png.tolist() == [[0, 64], [128, 255]]
    assert set(PROB_FORMATS) == {".npy", ".png", ".tif", ".tiff"}


def test_encode_array_npy_never_pickles() -> None:
    data = encode_array(np.arange(6, dtype=np.int16).reshape(2, 3), "NPY")
    assert np.array_equal(np.load(io.BytesIO(data), allow_pickle=False), np.arange(6).reshape(2, 3))
    with pytest.raises(ValueError):
        encode_array(np.array([{"a": 1}], dtype=object), "NPY")


def test_files_module_imports_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "import napari_retsam.cli._files\n"
        "heavy = [k for k in ('numpy', 'PIL', 'torch', 'napari', 'qtpy') if k in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- data/imageio.py: read_bytes / read_npy ------------------------------------------


def test_read_bytes_gunzips_and_names_what_it_expected(tmp_path: Path) -> None:
    (tmp_path / "a.ppm.gz").write_bytes(gzip.compress(b"hello"))
    assert read_bytes(tmp_path / "a.ppm.gz") == b"hello"
    assert read_bytes(tmp_path / "a.ppm.gz", gunzip=False) == gzip.compress(b"hello")
    with pytest.raises(RetsamInputError, match="file not found"):
        read_bytes(tmp_path / "missing.png")
    with pytest.raises(RetsamInputError, match="expected an image file, got a folder"):
        read_bytes(tmp_path)
    with pytest.raises(RetsamInputError, match="expected a file, got a folder"):
        read_bytes(tmp_path, kind="a file")
    (tmp_path / "bad.png.gz").write_bytes(b"not gzip")
    with pytest.raises(RetsamInputError, match="not a valid gzip file"):
        read_bytes(tmp_path / "bad.png.gz")


def test_read_npy_loads_one_array_without_pickle(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", arr)
    assert np.array_equal(read_npy(tmp_path / "a.npy"), arr)
    (tmp_path / "b.npy.gz").write_bytes(gzip.compress((tmp_path / "a.npy").read_bytes()))
    assert np.array_equal(read_npy(tmp_path / "b.npy.gz"), arr)
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(RetsamInputError, match="not a valid .npy array"):
        read_npy(tmp_path / "obj.npy")
    np.savez(tmp_path / "two.npz", a=arr, b=arr)
    with pytest.raises(RetsamInputError, match="expected a single array"):
        read_npy(tmp_path / "two.npz")
    (tmp_path / "junk.npy").write_bytes(b"\x00garbage")
    with pytest.raises(RetsamInputError, match="not a valid .npy array"):
        read_npy(tmp_path / "junk.npy")


# -- io_utils.load_torch_checkpoint -------------------------------------------------


def test_load_torch_checkpoint_round_trip_and_errors(tmp_path: Path) -> None:
    import torch

    from napari_retsam.io_utils import atomic_save_torch

    good = atomic_save_torch({"w": torch.arange(4.0), "n": 3}, tmp_path / "good.pt")
    data = load_torch_checkpoint(good)
    assert data["n"] == 3 and torch.equal(data["w"], torch.arange(4.0))

    with pytest.raises(RetsamInputError, match=r"^checkpoint file .*missing\.pt does not exist$"):
        load_torch_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(RetsamInputError, match=r"^GAN checkpoint not found: "):
        load_torch_checkpoint(tmp_path / "missing.pt", missing="GAN checkpoint not found: {path}")

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint\n" * 10)
    for bad in (truncated, garbage):
        with pytest.raises(RetsamInputError, match="truncated, corrupt or not a PyTorch weights file") as err:
            load_torch_checkpoint(bad)
        assert "\n" not in str(err.value)  # {error}: the first line of the exception text only
        with pytest.raises(RetsamInputError, match=r"^bad \w+: "):
            load_torch_checkpoint(bad, unreadable="bad {error_type}: {error_text}")

    # a pickled class (not a weights-only payload) is refused without running it
    torch.save({"obj": Path("x")}, tmp_path / "pickled.pt")
    with pytest.raises(RetsamInputError, match="cannot read checkpoint"):
        load_torch_checkpoint(tmp_path / "pickled.pt")

    atomic_save_torch([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(RetsamInputError, match=r"holds a list, expected a dict$"):
        load_torch_checkpoint(tmp_path / "list.pt")
    with pytest.raises(RetsamInputError, match=r"list\.pt is not ours"):
        load_torch_checkpoint(tmp_path / "list.pt", not_dict="{path} is not ours ({type})")
