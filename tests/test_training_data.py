"""Training data: items, checks, mixing, hold-out, views, prompts, low-res targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_retsam.data.fov import mask_bounding_box
from napari_retsam.errors import RetsamInputError
from napari_retsam.training.config import FinetuneConfig
from napari_retsam.training.data import (
    TrainItem,
    ViewSpec,
    apply_view,
    check_item,
    items_from_arrays,
    items_from_dataset,
    items_from_folder,
    jitter_box,
    mix_synthetic,
    rng_for,
    split_train_val,
    view_spec,
)
from napari_retsam.training.runner import DataOptions, collect_items
from napari_retsam.training.units import lowres_target


def _item(item_id: str, h: int = 8, w: int = 10, source: str = "real") -> TrainItem:
    mask = np.zeros((h, w), bool)
    mask[2:5, 3:7] = True
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = mask * 255
    image[..., 1] = np.arange(w, dtype=np.uint8)[None, :] * 10
    return TrainItem(item_id, image, mask, np.ones((h, w), bool), source)


def test_mask_shape_mismatch_names_the_sample() -> None:
    bad = TrainItem("im07", np.zeros((8, 10, 3), np.uint8), np.zeros((8, 9), bool), np.ones((8, 10), bool))
    with pytest.raises(RetsamInputError, match="im07.*mask shape"):
        check_item(bad)
    with pytest.raises(RetsamInputError, match="layer_1.*mask shape"):
        items_from_arrays([np.zeros((8, 10, 3))] * 2, [np.zeros((8, 10)), np.zeros((7, 10))])


def test_empty_mask_is_kept() -> None:
    items = items_from_arrays(np.zeros((8, 10, 3), np.uint8), np.zeros((8, 10), np.int32))
    assert len(items) == 1 and not items[0].mask.any() and items[0].id == "layer"


def test_items_from_arrays_stack_labels_and_grey() -> None:
    images = np.random.default_rng(0).random((3, 6, 7))  # grey floats in [0, 1]
    labels = np.zeros((3, 6, 7), np.int32)
    labels[1, 2, 3] = 5
    items = items_from_arrays(images, labels)
    assert [it.id for it in items] == ["layer_0", "layer_1", "layer_2"]
    assert items[0].image.shape == (6, 7, 3) and items[0].image.dtype == np.uint8
    assert items[1].mask[2, 3] and items[1].mask.sum() == 1
    assert np.array_equal(items[0].image[..., 0], np.rint(images[0] * 255).astype(np.uint8))
    with pytest.raises(RetsamInputError, match="pair up"):
        items_from_arrays(images[:2], labels)


def test_dataset_and_folder_readers(drive_root, folder_root) -> None:
    train = items_from_dataset("drive", drive_root, "train")
    assert train and all(it.image.shape[:2] == it.mask.shape == it.fov.shape for it in train)
    assert len(items_from_dataset("drive", drive_root, "train", limit=1)) == 1
    folder = items_from_folder(folder_root)
    assert folder and all(it.source == "synthetic" for it in folder)


def test_mix_ratio_and_split() -> None:
    real = [_item(f"r{k}") for k in range(4)]
    syn = [_item(f"s{k}", source="synthetic") for k in range(10)]
    mixed = mix_synthetic(real, syn, 0.5, seed=0)
    assert len(mixed) == 8 and sum(it.source == "synthetic" for it in mixed) == 4
    assert sum(it.source == "synthetic" for it in mix_synthetic(real, syn, 0.2)) == 1  # round(0.25 * 4)
    assert mix_synthetic(real, syn, 0.0) == real
    assert len(mix_synthetic([], syn, 0.3)) == 10  # synthetic only: all of them
    with pytest.raises(RetsamInputError, match="ratio"):
        mix_synthetic(real, syn, 1.0)
    # counted in pixels: a patch a quarter of a real image's area weighs a quarter
    patches = [_item(f"p{k}", 4, 5, source="synthetic") for k in range(10)]
    assert sum(it.source == "synthetic" for it in mix_synthetic(real, patches, 0.5)) == 10  # capped (16 wanted)
    assert sum(it.source == "synthetic" for it in mix_synthetic(real[:2], patches, 0.5)) == 8
    train, val = split_train_val(mixed, 0.5, seed=3)
    assert len(val) == 2 and all(it.source == "real" for it in val)
    assert {it.id for it in train} | {it.id for it in val} == {it.id for it in mixed}
    again = split_train_val(mixed, 0.5, seed=3)
    assert [it.id for it in again[1]] == [it.id for it in val]


def test_collect_items_needs_some_data(tmp_path) -> None:
    with pytest.raises(RetsamInputError, match="no training data"):
        collect_items(DataOptions(), FinetuneConfig())
    with pytest.raises(RetsamInputError, match="--root"):
        collect_items(DataOptions(dataset="drive"), FinetuneConfig())


def test_rng_for_is_keyed() -> None:
    a = rng_for(0, "box", 1, 2).random(3)
    assert np.array_equal(a, rng_for(0, "box", 1, 2).random(3))
    assert not np.array_equal(a, rng_for(0, "box", 1, 3).random(3))
    assert not np.array_equal(a, rng_for(1, "box", 1, 2).random(3))


def test_views_transform_image_mask_and_fov_together() -> None:
    item = check_item(_item("a"))
    assert view_spec(0, "a", 0).is_identity and apply_view(item, ViewSpec()) is item
    for view in range(1, 9):
        spec = view_spec(5, "a", view, brightness=0.0, contrast=0.0, saturation=0.0)
        seen = apply_view(item, spec)
        assert np.array_equal(seen.image[..., 0] > 0, seen.mask)  # red channel follows the mask
        expected = np.rot90(item.mask[:, ::-1] if spec.flip else item.mask, spec.rot90)
        assert np.array_equal(seen.mask, expected)
    assert view_spec(5, "a", 3) == view_spec(5, "a", 3)


def test_colour_jitter_formula() -> None:
    image = np.full((2, 2, 3), 100, np.uint8)
    item = TrainItem("c", image, np.zeros((2, 2), bool), np.ones((2, 2), bool))
    bright = apply_view(item, ViewSpec(index=1, brightness=1.2))
    assert np.all(bright.image == 120)
    # contrast around the mean grey of a uniform image and saturation of a grey image change nothing
    assert np.all(apply_view(item, ViewSpec(index=1, contrast=0.7, saturation=1.3)).image == 100)
    rgb = TrainItem("d", np.array([[[200, 100, 0]]], np.uint8), np.zeros((1, 1), bool), np.ones((1, 1), bool))
    grey = (0.299 * 200 + 0.587 * 100) / 255
    out = apply_view(rgb, ViewSpec(index=1, saturation=0.5)).image[0, 0] / 255
    expected = (np.array([200, 100, 0]) / 255 - grey) * 0.5 + grey
    assert np.allclose(out, expected, atol=1 / 255)


def test_prompt_box_and_jitter() -> None:
    region = np.zeros((10, 12), bool)
    region[2:6, 3:9] = True
    assert mask_bounding_box(region).tolist() == [3, 2, 8, 5]
    assert mask_bounding_box(np.zeros((3, 3), bool)) is None
    box = np.array([3.0, 2.0, 8.0, 5.0])
    assert np.array_equal(jitter_box(box, 0.0, rng_for(0), 12, 10), box)
    for seed in range(50):
        j = jitter_box(box, 0.1, rng_for(seed), 12, 10)
        assert np.all(np.abs(j - box) <= 0.1 * np.array([5, 3, 5, 3]) + 1e-12)
        assert 0 <= j[0] < j[2] <= 11 and 0 <= j[1] < j[3] <= 9
    edge = jitter_box(np.array([0.0, 0.0, 11.0, 9.0]), 0.3, rng_for(1), 12, 10)
    assert 0 <= edge[0] and edge[2] <= 11 and edge[3] <= 9


def test_lowres_target_fractions() -> None:
    size = 16  # encoder input S; low-res frame S/4 = 4
    mask = np.zeros((16, 16), bool)
    mask[:, :2] = True  # left 2 columns: half of the first 4-pixel block
    target, input_size = lowres_target(mask, size)
    assert input_size == (16, 16) and target.shape == (1, 4, 4)
    assert torch.allclose(target[0, :, 0], torch.full((4,), 0.5)) and target[0, :, 1:].sum() == 0
    tall = np.ones((16, 8), bool)  # resized to 16×8 inside 16×16: right half is padding
    target, input_size = lowres_target(tall, size)
    assert input_size == (16, 8)
    assert torch.all(target[0, :, :2] == 1) and torch.all(target[0, :, 2:] == 0)


def test_config_roundtrip_and_validation() -> None:
    config = FinetuneConfig(model_type="tiny", lr=3e-4, betas=(0.8, 0.9), tile=128)
    again = FinetuneConfig.from_json(config.to_json())
    assert again == config
    with pytest.raises(RetsamInputError, match="batch-size"):
        FinetuneConfig(batch_size=0)
    with pytest.raises(RetsamInputError, match="loss"):
        FinetuneConfig(loss="dice")
    with pytest.raises(RetsamInputError, match="unknown"):
        FinetuneConfig.from_dict({"lr": 1.0, "nope": 2})
