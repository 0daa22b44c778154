"""The pixel normalisation rule and SAM's resize/pad/box/logit geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_retsam.errors import RetsamInputError
from napari_retsam.sam.preprocess import (
    PIXEL_MEAN,
    PIXEL_STD,
    boxes_to_input,
    postprocess_logits,
    prepare_image,
    resized_shape,
    to_uint8_rgb,
)


def test_uint8_rule_by_dtype_and_channels():
    gray = np.array([[0, 10], [200, 255]], np.uint8)
    rgb = to_uint8_rgb(gray)
    assert rgb.shape == (2, 2, 3) and np.all(rgb[..., 1] == gray)
    rgba = np.dstack([rgb, np.full((2, 2), 7, np.uint8)])
    assert np.array_equal(to_uint8_rgb(rgba), rgb)
    assert np.array_equal(to_uint8_rgb(gray[..., None]), rgb)
    u16 = np.array([[1000, 2000], [3000, 3000]], np.uint16)  # stretched min..max -> 0..255
    assert np.array_equal(to_uint8_rgb(u16)[..., 0], [[0, 128], [255, 255]])
    unit = np.array([[0.0, 0.5], [0.2, 1.0]], np.float32)  # [0, 1] floats: ×255
    assert np.array_equal(to_uint8_rgb(unit)[..., 2], [[0, 128], [51, 255]])
    wide = np.array([[-1.0, 0.0], [1.0, 3.0]])  # outside [0, 1]: stretched
    assert np.array_equal(to_uint8_rgb(wide)[..., 0], [[0, 64], [128, 255]])
    assert np.array_equal(to_uint8_rgb(np.array([[True, False]]))[0, :, 0], [255, 0])
    assert np.all(to_uint8_rgb(np.full((3, 3), 5000, np.uint16)) == 0)
    with pytest.raises(RetsamInputError, match="NaN"):
        to_uint8_rgb(np.array([[np.nan, 1.0]]))
    with pytest.raises(RetsamInputError, match="H×W"):
        to_uint8_rgb(np.zeros((2, 3, 4, 5)))
    with pytest.raises(RetsamInputError, match="H×W"):
        to_uint8_rgb(np.zeros((4, 4, 2)))


def test_prepare_image_geometry_and_normalisation():
    image = np.full((48, 60, 3), 100, np.uint8)
    prepared = prepare_image(image, 64)
    assert resized_shape(48, 60, 64) == (51, 64) == prepared.input_size  # 48·64/60 = 51.2 -> 51
    assert prepared.original_size == (48, 60) and prepared.tensor.shape == (3, 64, 64)
    expected = (100 - np.array(PIXEL_MEAN)) / np.array(PIXEL_STD)
    np.testing.assert_allclose(prepared.tensor[:, :51, :].mean(dim=(1, 2)).numpy(), expected, rtol=1e-5)
    assert torch.all(prepared.tensor[:, 51:, :] == 0)  # zero padding at the bottom


def test_box_mapping_by_hand():
    boxes = boxes_to_input(np.array([[10.0, 12.0, 30.0, 24.0]]), (48, 60), (51, 64))
    np.testing.assert_allclose(boxes, [[10 * 64 / 60, 12 * 51 / 48, 30 * 64 / 60, 24 * 51 / 48]])


def test_postprocess_matches_segment_anything(tiny_sam):
    logits = torch.randn(2, 1, 16, 16)
    ours = postprocess_logits(logits, 64, (51, 64), (48, 60))
    theirs = tiny_sam.sam.postprocess_masks(logits, (51, 64), (48, 60))
    assert ours.shape == (2, 1, 48, 60)
    torch.testing.assert_close(ours, theirs)
