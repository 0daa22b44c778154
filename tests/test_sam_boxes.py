"""The one box rule (sam/boxes.py): clip, refuse, per-window part; shared by engine, CLI and widget."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_retsam.errors import RetsamInputError
from napari_retsam.sam.boxes import (
    OUTSIDE,
    ZERO_AREA,
    box_in_tile,
    clip_box,
    validate_boxes,
)


def test_clip_box_clips_and_names_the_refusal():
    assert clip_box(-5, 2, 20, 30, 20, 10) == ((0.0, 2.0, 9.0, 19.0), None)
    assert clip_box(10, 0, 20, 5, 20, 10) == (None, OUTSIDE)
    assert clip_box(-5, 0, 0, 5, 20, 10) == (None, ZERO_AREA)


def test_validate_boxes_sorts_clips_and_refuses():
    out = validate_boxes([[20, 30, -5, 2]], 20, 10)
    np.testing.assert_array_equal(out, [[0.0, 2.0, 9.0, 19.0]])
    np.testing.assert_array_equal(validate_boxes(None, 4, 6), [[0.0, 0.0, 5.0, 3.0]])
    with pytest.raises(RetsamInputError, match=r"box 2 \(10, 0, 20, 5\) lies wholly outside the 10×20 image"):
        validate_boxes([[-5, 0, 0, 5], [10, 0, 20, 5]], 20, 10)  # outside is reported before zero area
    with pytest.raises(RetsamInputError, match=r"box 1 \(0, 0, 0, 5\) has zero area inside the image"):
        validate_boxes([[-5, 0, 0, 5]], 20, 10)


def test_box_in_tile_is_in_window_coordinates():
    np.testing.assert_array_equal(box_in_tile(np.array([5.0, 5.0, 40.0, 12.0]), (0, 8, 16, 24)),
                                  [0.0, 5.0, 15.0, 12.0])
    assert box_in_tile([0, 0, 7, 7], (0, 8, 16, 24)) is None
    assert box_in_tile([0, 0, 9, 9], (0, 8, 16, 24)).dtype == np.float64


def test_the_box_rule_imports_no_torch():
    code = "import sys, napari_retsam.sam.boxes; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
