"""Dataset readers on tiny copies of DRIVE, STARE, CHASE_DB1 and a generic folder."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_retsam.data import DATASETS, Dataset, Sample, detect_dataset, open_dataset
from napari_retsam.errors import RetsamInputError


def _pil(path: Path) -> np.ndarray:
    """Independent reference decoding: Pillow on the (gunzipped) bytes."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return np.asarray(Image.open(io.BytesIO(data)))


# ------------------------------------------------------------------ DRIVE
def test_drive_splits_ids_and_contents(drive_root: Path) -> None:
    test = open_dataset("drive", drive_root)
    assert isinstance(test, Dataset) and test.split == "test" and test.annotator == 1
    assert test.ids == ("01_test", "02_test", "03_test") and len(test) == 3
    train = open_dataset("drive", drive_root, split="train")
    assert train.ids == ("21_training", "22_training")
    assert open_dataset("drive", drive_root, split="all").ids == (
        "01_test", "02_test", "03_test", "21_training", "22_training",
    )
    s = test[1]
    assert isinstance(s, Sample) and s.id == "02_test" and not s.fov_computed
    assert s.image.dtype == np.uint8 and s.image.shape == (48, 44, 3)
    np.testing.assert_array_equal(s.image, _pil(drive_root / "test/images/02_test.tif"))
    np.testing.assert_array_equal(s.gold, _pil(drive_root / "test/1st_manual/02_manual1.gif") == 255)
    np.testing.assert_array_equal(s.fov, _pil(drive_root / "test/mask/02_test_mask.gif") == 255)
    assert s.gold.dtype == bool and 0 < s.gold.sum() < s.fov.sum()
    assert [x.id for x in test] == list(test.ids)
    assert [x.id for x in test[1:]] == ["02_test", "03_test"]
    assert test[-1].id == "03_test" and test.get("01_test").id == "01_test"


def test_drive_second_annotator_is_the_palette_gif(drive_root: Path) -> None:
    a1 = open_dataset("drive", drive_root, split="test", annotator=1)
    a2 = open_dataset("drive", drive_root, split="test", annotator=2)
    for s1, s2 in zip(a1, a2):
        idx = _pil(drive_root / f"test/2nd_manual/{s1.id[:2]}_manual2.gif")  # raw palette indices 0/1
        np.testing.assert_array_equal(s2.gold, idx == 1)
        assert s2.gold.sum() > 0 and not np.array_equal(s1.gold, s2.gold)


@pytest.mark.parametrize("split", ["train", "all"])
def test_drive_second_annotator_only_on_test(drive_root: Path, split: str) -> None:
    with pytest.raises(RetsamInputError, match="only for the test split"):
        open_dataset("drive", drive_root, split=split, annotator=2)


def test_drive_split_folder_as_root(drive_root: Path) -> None:
    ds = open_dataset("drive", drive_root / "training", split="all")
    assert ds.ids == ("21_training", "22_training")
    with pytest.raises(RetsamInputError, match="only the DRIVE train split"):
        open_dataset("drive", drive_root / "training", split="test")


def test_drive_missing_and_unmatched_files_are_named(drive_root: Path) -> None:
    (drive_root / "test/1st_manual/02_manual1.gif").unlink()
    with pytest.raises(RetsamInputError, match=r"missing NN_manual1.gif .* for image\(s\) 02_test"):
        open_dataset("drive", drive_root)
    shutil.copy(drive_root / "test/1st_manual/01_manual1.gif", drive_root / "test/1st_manual/02_manual1.gif")
    shutil.copy(drive_root / "test/mask/01_test_mask.gif", drive_root / "test/mask/09_test_mask.gif")
    with pytest.raises(RetsamInputError, match="without a matching image: 09_test_mask.gif"):
        open_dataset("drive", drive_root)
    (drive_root / "test/mask/09_test_mask.gif").unlink()
    shutil.rmtree(drive_root / "test/mask")
    with pytest.raises(RetsamInputError, match="FOV masks: folder .*mask not found"):
        open_dataset("drive", drive_root)


def test_unreadable_image_is_reported_on_access(drive_root: Path) -> None:
    (drive_root / "test/images/03_test.tif").write_bytes(b"this is not a tiff")
    ds = open_dataset("drive", drive_root)  # listing only: no decoding yet
    assert ds[0].id == "01_test"
    with pytest.raises(RetsamInputError, match="03_test.tif"):
        ds[2]


def test_shape_mismatch_is_reported(drive_root: Path) -> None:
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(drive_root / "test/1st_manual/01_manual1.gif")
    with pytest.raises(RetsamInputError, match=r"01_manual1.gif is 10×10 but its image 01_test.tif is 48×44"):
        open_dataset("drive", drive_root)[0]


# ------------------------------------------------------------------ STARE
def test_stare_matches_labels_on_id_whatever_the_spelling(stare_root: Path) -> None:
    ds = open_dataset("stare", stare_root, split="all")
    assert ds.ids == ("im0001", "im0044", "im0162", "im0324")
    expected_ah = {
        "im0001": "im0001.ah.ppm", "im0044": "im0044.ah.pgm",
        "im0162": "im0162.ah.ppm.gz", "im0324": "im0324.ah.pgm.gz",
    }
    for s in ds:
        assert s.fov_computed and s.image.shape == (60, 70, 3)
        ref = _pil(stare_root / "labels-ah" / expected_ah[s.id])
        ref = ref[..., 0] if ref.ndim == 3 else ref
        np.testing.assert_array_equal(s.gold, ref == 255)
        assert s.fov[s.gold].all()  # every annotated vessel pixel inside the FOV
    np.testing.assert_array_equal(ds[2].image, _pil(stare_root / "images/im0162.ppm.gz"))


def test_stare_annotators_and_splits(stare_root: Path) -> None:
    assert open_dataset("stare", stare_root, split="train").ids == ("im0001", "im0044")
    assert open_dataset("stare", stare_root, split="test").ids == ("im0162", "im0324")
    vk = open_dataset("stare", stare_root, split="test", annotator=2)
    np.testing.assert_array_equal(vk[1].gold, _pil(stare_root / "labels-vk/im0324.vk.ppm.gz") == 255)
    ah = open_dataset("stare", stare_root, split="test", annotator=1)
    assert not np.array_equal(ah[1].gold, vk[1].gold)


def test_stare_fov_covers_the_disc(stare_root: Path) -> None:
    from fixtures_data import STARE_SHAPE, fundus_arrays

    s = open_dataset("stare", stare_root, split="train")[0]
    _, _, disc = fundus_arrays(STARE_SHAPE, seed=100)
    from scipy import ndimage as ndi

    assert s.fov[ndi.binary_erosion(disc, iterations=1)].all()
    assert not (s.fov & ~ndi.binary_dilation(disc, iterations=2)).any()


def test_stare_errors(stare_root: Path) -> None:
    (stare_root / "labels-vk/im0044.vk.ppm").unlink()
    with pytest.raises(RetsamInputError, match=r"missing imNNNN.vk.ppm .* im0044"):
        open_dataset("stare", stare_root, split="all", annotator=2)
    shutil.copy(stare_root / "labels-ah/im0044.ah.pgm", stare_root / "labels-ah/im0044.ah.ppm")
    with pytest.raises(RetsamInputError, match="two files for 'im0044'"):
        open_dataset("stare", stare_root, split="all")
    (stare_root / "labels-ah/im0044.ah.ppm").unlink()
    shutil.copy(stare_root / "labels-ah/im0044.ah.pgm", stare_root / "labels-ah/im0077.ah.pgm")
    with pytest.raises(RetsamInputError, match="without a matching image: im0077.ah.pgm"):
        open_dataset("stare", stare_root, split="all")
    (stare_root / "labels-ah/im0077.ah.pgm").unlink()
    (stare_root / "images/notes.png").write_bytes(b"")
    with pytest.raises(RetsamInputError, match="unexpected files .*notes.png"):
        open_dataset("stare", stare_root, split="all")


# ------------------------------------------------------------------ CHASE_DB1
def test_chase_ids_splits_annotators(chase_root: Path) -> None:
    assert open_dataset("chase", chase_root, split="all").ids == ("Image_01L", "Image_01R", "Image_11L", "Image_14R")
    assert open_dataset("chase", chase_root, split="train").ids == ("Image_01L", "Image_01R")
    test1 = open_dataset("chase", chase_root, split="test", annotator=1)
    test2 = open_dataset("chase", chase_root, split="test", annotator=2)
    assert test1.ids == ("Image_11L", "Image_14R")
    s1, s2 = test1[0], test2[0]
    np.testing.assert_array_equal(s1.gold, _pil(chase_root / "Image_11L_1stHO.png").astype(bool))
    np.testing.assert_array_equal(s2.gold, _pil(chase_root / "Image_11L_2ndHO.png") == 255)
    assert s1.fov_computed and s1.fov[s1.gold].all() and s2.fov[s2.gold].all()
    assert s1.image.shape == (60, 72, 3)
    # the disc is clipped by the frame: the FOV reaches the top and bottom rows
    assert s1.fov[0].any() and s1.fov[-1].any() and not s1.fov[:, 0].any()


def test_chase_missing_annotation(chase_root: Path) -> None:
    (chase_root / "Image_01R_2ndHO.png").unlink()
    with pytest.raises(RetsamInputError, match="Image_01R"):
        open_dataset("chase", chase_root, split="train", annotator=2)
    assert len(open_dataset("chase", chase_root, split="train", annotator=1)) == 2


@pytest.mark.parametrize("alias", ["CHASE_DB1", "chase-db1", "Chase"])
def test_chase_name_alias(chase_root: Path, alias: str) -> None:
    assert open_dataset(alias, chase_root, split="all").name == "chase"


# ------------------------------------------------------------------ generic folder
def test_folder_with_fov(folder_root: Path) -> None:
    ds = open_dataset("folder", folder_root)
    assert ds.ids == ("a", "b", "c")
    assert open_dataset("folder", folder_root, split="train").ids == ds.ids  # a flat folder has no split
    a, b, c = ds
    assert not a.fov_computed and a.image.shape == (40, 48, 3) and c.image.shape == (52, 44, 3)
    np.testing.assert_array_equal(a.gold, _pil(folder_root / "masks/a.png") == 255)
    np.testing.assert_array_equal(b.gold, _pil(folder_root / "masks/b.gif") == 255)
    np.testing.assert_array_equal(c.gold, np.load(folder_root / "masks/c.npy"))
    np.testing.assert_array_equal(c.fov, np.load(folder_root / "fov/c.npy"))


def test_folder_without_fov_and_without_masks(folder_root_nofov: Path) -> None:
    ds = open_dataset("folder", folder_root_nofov)
    s = ds[0]
    assert s.fov_computed and s.fov[s.gold].all()
    shutil.rmtree(folder_root_nofov / "masks")
    s = open_dataset("folder", folder_root_nofov)[0]
    assert s.gold is None and s.fov.any()
    with pytest.raises(RetsamInputError, match="masks2/"):
        open_dataset("folder", folder_root_nofov, annotator=2)


def test_folder_with_train_test_subfolders(folder_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "split_set"
    shutil.copytree(folder_root, root / "train")
    shutil.copytree(folder_root, root / "test")
    for sub in ("images", "masks", "fov"):
        for p in (root / "test" / sub).iterdir():
            p.rename(p.with_name("t" + p.name))
    assert open_dataset("folder", root, split="train").ids == ("a", "b", "c")
    assert open_dataset("folder", root, split="test").ids == ("ta", "tb", "tc")
    assert len(open_dataset("folder", root, split="all")) == 6


def test_folder_unmatched_mask(folder_root: Path) -> None:
    (folder_root / "fov/b.png").rename(folder_root / "fov/zz.png")
    with pytest.raises(RetsamInputError, match=r"missing <id>.<ext> in .*fov for image\(s\) b"):
        open_dataset("folder", folder_root)


# ------------------------------------------------------------------ general
def test_bad_names_split_annotator(drive_root: Path, tmp_path: Path) -> None:
    with pytest.raises(RetsamInputError, match="unknown dataset 'hrf'"):
        open_dataset("hrf", drive_root)
    with pytest.raises(RetsamInputError, match="unknown split 'val'"):
        open_dataset("drive", drive_root, split="val")
    with pytest.raises(RetsamInputError, match="annotator"):
        open_dataset("drive", drive_root, annotator=3)
    with pytest.raises(RetsamInputError, match="not found"):
        open_dataset("drive", tmp_path / "nowhere")
    with pytest.raises(RetsamInputError, match="not found"):
        open_dataset("stare", tmp_path / "nowhere")
    with pytest.raises(RetsamInputError, match="not found"):
        open_dataset("chase", tmp_path / "nowhere")


def test_detect_dataset(drive_root: Path, stare_root: Path, chase_root: Path, folder_root: Path, tmp_path: Path) -> None:
    assert DATASETS == ("drive", "stare", "chase", "folder")
    assert detect_dataset(drive_root) == ("drive", "test")
    assert detect_dataset(drive_root / "training") == ("drive", "train")
    assert detect_dataset(stare_root) == ("stare", "all")
    assert detect_dataset(chase_root) == ("chase", "all")
    assert detect_dataset(folder_root) == ("folder", "all")
    assert detect_dataset(tmp_path / "nothing") is None
    assert detect_dataset(drive_root / "test/images/01_test.tif") is None


def test_import_is_pure() -> None:
    """Importing napari_retsam.data (and loading a sample) pulls in neither torch, napari nor Qt."""
    code = (
        "import sys, numpy as np\n"
        "import napari_retsam.data as d\n"
        "d.compute_fov(np.pad(np.full((20, 20, 3), 200, np.uint8), ((5, 5), (5, 5), (0, 0))))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'napari', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy', 'vispy')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


def test_empty_shipped_fov_and_non_binary_gold_are_refused(folder_root: Path) -> None:
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(folder_root / "fov/a.png")
    with pytest.raises(RetsamInputError, match="field of view of a.png is empty"):
        open_dataset("folder", folder_root)[0]
    labels = np.zeros((40, 48), np.uint8)
    labels[5:10, 5:10], labels[20:25, 20:25] = 1, 2  # a two-class label image
    Image.fromarray(labels).save(folder_root / "masks/b.gif", format="GIF")
    with pytest.raises(RetsamInputError, match="b.gif is not binary"):
        open_dataset("folder", folder_root)[1]
