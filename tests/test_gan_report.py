"""Quality report: statistics against hand computations, pairing fidelity, report keys."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_retsam.data import open_dataset, synthetic_fundus
from napari_retsam.errors import RetsamInputError
from napari_retsam.gan.data import prepare_pairs
from napari_retsam.gan.report import (
    colour_histograms,
    dice,
    histogram_distance,
    pairing_dice,
    quality_report,
    report_figure,
    report_summary_lines,
    rms_contrast,
    vessel_contrast,
    vessel_density,
    vessel_width,
)


def test_simple_statistics_match_hand_computations() -> None:
    images = np.zeros((1, 2, 2, 3), np.uint8)
    images[0, :, :, 1] = [[0, 100], [200, 255]]
    fov = np.array([[True, True], [True, False]])
    masks = np.array([[[True, False], [False, False]]])
    assert vessel_density(masks, fov)[0] == pytest.approx(1 / 3)
    assert rms_contrast(images, fov)[0] == pytest.approx(np.std([0, 100, 200]) / 255)
    assert vessel_contrast(images, masks, fov)[0] == pytest.approx((150 - 0) / 255)
    assert np.isnan(vessel_contrast(images, np.zeros_like(masks), fov)[0])
    assert dice(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == pytest.approx(0.5)
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_vessel_width_is_area_over_centre_line() -> None:
    masks = np.zeros((3, 40, 60), bool)
    masks[0, 18:21, 5:55] = True     # a horizontal vessel 3 px wide, 50 px long
    masks[1, 10:30, 28:33] = True    # 5 px wide, 20 px long
    width = vessel_width(masks, np.ones((40, 60), bool))
    assert width[0] == pytest.approx(3.0, rel=0.1) and width[1] == pytest.approx(5.0, rel=0.35)
    assert width[1] > width[0]
    assert np.isnan(width[2])        # no vessel: no width
    fov = np.zeros((40, 60), bool)   # outside the FOV nothing counts
    assert np.isnan(vessel_width(masks[:1], fov)[0])


def test_histogram_distance_hand_computation() -> None:
    a = np.zeros((1, 1, 2, 3), np.uint8)           # two black pixels
    b = np.zeros((1, 1, 2, 3), np.uint8)
    b[0, 0, 1] = 255                               # one black, one white pixel
    fov = np.ones((1, 2), bool)
    ha, hb = colour_histograms(a, fov), colour_histograms(b, fov)
    assert ha.shape == (3, 32) and np.allclose(ha.sum(axis=1), 1)
    # per channel: ½ (|1 − ½| + |0 − ½|) = ½
    assert histogram_distance(ha, hb) == pytest.approx(0.5)
    assert histogram_distance(ha, ha) == 0.0


@pytest.fixture(scope="module")
def synthetic_pairs():
    class S:
        def __init__(self, i: int) -> None:
            f = synthetic_fundus(100 + i, 128)
            self.id, self.image, self.gold, self.fov = f"s{i}", f.image, f.vessels, f.fov

    return prepare_pairs([S(i) for i in range(4)], 128)


def test_shuffled_pairs_get_a_much_lower_pairing_dice(synthetic_pairs) -> None:
    p = synthetic_pairs
    matched = pairing_dice(p.images, p.masks, p.fovs)
    order = np.roll(np.arange(len(p)), 1)
    shuffled = pairing_dice(p.images, p.masks[order], p.fovs & p.fovs[order])
    assert matched.mean() > 0.3
    assert shuffled.mean() < 0.5 * matched.mean(), (matched, shuffled)
    assert (matched > shuffled).all()


def test_quality_report_keys_and_json(gan_checkpoint, gan_folder) -> None:
    real = prepare_pairs(open_dataset("folder", gan_folder, "all"), 32)
    report = quality_report(gan_checkpoint, real, n=3, seed=1)
    json.dumps(report, allow_nan=False)  # JSON-safe
    assert report["n_generated"] == 3 and report["n_real"] == 4 and report["seed"] == 1
    assert set(report["colour_histogram_distance"]) == {"generated_vs_real", "real_half_vs_half", "bins"}
    for side in ("generated", "real"):
        assert set(report[side]) >= {"vessel_density", "vessel_width", "segmented_width", "rms_contrast",
                                     "vessel_contrast", "pairing_dice", "pairing_dice_per_image"}
    assert len(report["generated"]["pairing_dice_per_image"]) == 3
    assert 0 <= report["colour_histogram_distance"]["generated_vs_real"] <= 1
    assert report["real"]["vessel_density"]["mean"] == pytest.approx(
        float(np.mean(vessel_density(real.masks, real.fovs))))
    assert "real_shuffled_pairing_dice" in report
    # same seed, same report
    assert quality_report(gan_checkpoint, real, n=3, seed=1)["generated"] == report["generated"]
    lines = report_summary_lines(report)
    assert any("pairing Dice" in line for line in lines)
    assert any(line.startswith("vessel width (px, masks)") for line in lines)
    fig = report_figure(report)
    assert len(fig.axes) == 3


def test_quality_report_refusals(gan_checkpoint, gan_folder, gan_image_only_folder) -> None:
    real64 = prepare_pairs(open_dataset("folder", gan_folder, "all"), 64)
    with pytest.raises(RetsamInputError, match="64 px but the generator is 32"):
        quality_report(gan_checkpoint, real64)
    no_masks = prepare_pairs(open_dataset("folder", gan_image_only_folder, "all"), 32)
    with pytest.raises(RetsamInputError, match="needs a real dataset with vessel masks"):
        quality_report(gan_checkpoint, no_masks)


def test_quality_report_of_a_conditional_generator_uses_the_real_masks(gan_conditional_checkpoint, gan_folder) -> None:
    real = prepare_pairs(open_dataset("folder", gan_folder, "all"), 32)
    report = quality_report(gan_conditional_checkpoint, real, n=4, seed=0)
    assert report["generator"]["mode"] == "conditional"
    from napari_retsam.gan.checkpoint import load_generator

    fov = load_generator(gan_conditional_checkpoint).fov_template
    # generated masks are the real masks (cut to the FOV template): same densities
    expected = vessel_density(real.masks & fov, np.broadcast_to(fov, real.masks.shape))
    assert report["generated"]["vessel_density"]["mean"] == pytest.approx(float(expected.mean()))
