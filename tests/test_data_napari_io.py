"""The napari reader and sample-data contributions (napari_retsam.napari_io)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_retsam.data import open_dataset
from napari_retsam.napari_io import get_reader, read_dataset_path, synthetic_fundus_sample


def _by_kind(layers):
    image = [layer for layer in layers if layer[2] == "image"]
    labels = [layer for layer in layers if layer[2] == "labels"]
    return image, labels


def test_reader_declines_what_it_does_not_handle(tmp_path: Path, drive_root: Path, chase_root: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "plain.png")
    (tmp_path / "empty").mkdir()
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "plain.png")) is None  # an image outside any dataset: napari's own reader
    assert get_reader(str(tmp_path / "empty")) is None
    assert get_reader(str(tmp_path / "does_not_exist")) is None
    assert get_reader(str(drive_root / "test/1st_manual/01_manual1.gif")) is None  # annotation, not a sample
    assert get_reader(str(drive_root / "test/mask/01_test_mask.gif")) is None
    assert get_reader(str(chase_root / "Image_01L_1stHO.png")) is None
    assert get_reader([str(drive_root), str(chase_root)]) is None


def test_drive_folder_opens_as_stacked_layers(drive_root: Path) -> None:
    reader = get_reader(str(drive_root))
    assert callable(reader)
    layers = reader(str(drive_root))
    (image,), (gold, fov) = _by_kind(layers)
    assert image[0].shape == (3, 48, 44, 3) and image[0].dtype == np.uint8 and image[1]["rgb"] is True
    ds = open_dataset("drive", drive_root, split="test")
    for i, s in enumerate(ds):
        np.testing.assert_array_equal(image[0][i], s.image)
        np.testing.assert_array_equal(gold[0][i], s.gold.astype(np.uint8))
        np.testing.assert_array_equal(fov[0][i], s.fov.astype(np.uint8))
    assert "gold" in gold[1]["name"] and "FOV" in fov[1]["name"]
    meta = image[1]["metadata"]["retsam"]
    assert meta["ids"] == ["01_test", "02_test", "03_test"] and meta["split"] == "test" and meta["dataset"] == "drive"
    # a split folder opens that split
    train = get_reader(str(drive_root / "training"))(str(drive_root / "training"))
    assert train[0][0].shape == (2, 48, 44, 3)


def test_folder_of_different_sizes_is_zero_padded(folder_root: Path) -> None:
    layers = read_dataset_path(folder_root)
    (image,), (gold, fov) = _by_kind(layers)
    assert image[0].shape == (3, 52, 48, 3) and gold[0].shape == (3, 52, 48)
    c = open_dataset("folder", folder_root)[2]  # 52×44: padded on the right
    np.testing.assert_array_equal(image[0][2, :, :44], c.image)
    assert not image[0][2, :, 44:].any() and not fov[0][2, :, 44:].any() and not gold[0][2, :, 44:].any()
    a = open_dataset("folder", folder_root)[0]  # 40×48: padded at the bottom
    np.testing.assert_array_equal(fov[0][0, :40], a.fov.astype(np.uint8))
    assert not fov[0][0, 40:].any()
    assert image[1]["metadata"]["retsam"]["shapes"] == [[40, 48], [40, 48], [52, 44]]


def test_folder_without_masks_has_no_gold_layer(folder_root_nofov: Path) -> None:
    shutil.rmtree(folder_root_nofov / "masks")
    layers = read_dataset_path(folder_root_nofov)
    image, labels = _by_kind(layers)
    assert len(image) == 1 and len(labels) == 1 and "FOV" in labels[0][1]["name"]
    assert image[0][1]["metadata"]["retsam"]["fov_computed"] == [True, True, True]


@pytest.mark.parametrize(
    ("fixture", "relpath", "sample_id", "shape"),
    [
        ("drive_root", "test/images/02_test.tif", "02_test", (48, 44)),
        ("drive_root", "training/images/21_training.tif", "21_training", (48, 44)),
        ("stare_root", "images/im0162.ppm.gz", "im0162", (60, 70)),
        ("chase_root", "Image_11L.jpg", "Image_11L", (60, 72)),
        ("folder_root", "images/c.tif", "c", (52, 44)),
    ],
)
def test_single_sample_file(request, fixture: str, relpath: str, sample_id: str, shape: tuple[int, int]) -> None:
    root: Path = request.getfixturevalue(fixture)
    path = str(root / relpath)
    reader = get_reader(path)
    assert reader is not None
    (image,), (gold, fov) = _by_kind(reader(path))
    assert image[0].shape == (*shape, 3) and gold[0].shape == shape and fov[0].shape == shape
    assert image[1]["metadata"]["retsam"]["ids"] == [sample_id]
    assert gold[0].dtype == np.uint8 and set(np.unique(gold[0])) <= {0, 1} and gold[0].any()
    assert (fov[0][gold[0] == 1] == 1).all()


def test_broken_dataset_gives_no_layers_and_no_traceback(drive_root: Path) -> None:
    (drive_root / "test/1st_manual/01_manual1.gif").unlink()
    reader = get_reader(str(drive_root))
    assert reader is not None  # names look like DRIVE ...
    assert reader(str(drive_root)) == []  # ... but the user gets a notification, not an exception


def test_synthetic_sample_layers() -> None:
    from napari_retsam.data import synthetic_fundus

    layers = synthetic_fundus_sample()
    assert [layer[2] for layer in layers] == ["image", "labels", "labels"]
    ref = synthetic_fundus(seed=0)
    np.testing.assert_array_equal(layers[0][0], ref.image)
    np.testing.assert_array_equal(layers[1][0], ref.vessels.astype(np.uint8))
    np.testing.assert_array_equal(layers[2][0], ref.fov.astype(np.uint8))
    assert layers[0][1]["rgb"] is True


@pytest.mark.napari
def test_viewer_opens_dataset_and_sample_through_the_plugin(make_napari_viewer, stare_root: Path) -> None:
    import napari

    viewer = make_napari_viewer()
    added = viewer.open(str(stare_root), plugin="napari-retsam")
    kinds = [type(layer).__name__ for layer in added]
    assert kinds == ["Image", "Labels", "Labels"]
    assert added[0].data.shape == (4, 60, 70, 3) and added[0].rgb
    assert isinstance(added[1], napari.layers.Labels) and added[1].data.shape == (4, 60, 70)
    assert added[0].metadata["retsam"]["ids"] == ["im0001", "im0044", "im0162", "im0324"]

    sample = viewer.open_sample("napari-retsam", "synthetic_fundus")
    assert [type(layer).__name__ for layer in sample] == ["Image", "Labels", "Labels"]
    assert len(viewer.layers) == 6
