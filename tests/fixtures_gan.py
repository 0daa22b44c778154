"""GAN fixtures: tiny configurations, prepared pairs and trained tiny checkpoints.

==========================  ====================================================
fixture / helper            contents
==========================  ====================================================
``tiny_config(**kw)``       a 32 px GanConfig with a handful of channels
``tiny_pairs(n, size)``     PreparedPairs from ``synthetic_fundus`` (64 px → size)
``gan_folder``              generic dataset folder, 4 synthetic pairs of 64 px
``gan_image_only_folder``   the same images without ``masks/``
``gan_run``                 output folder of a 3-iteration paired training (32 px)
``gan_checkpoint``          its ``generator_last.pt``
``gan_conditional_checkpoint``  a 2-iteration conditional generator (32 px)
``gan_image_only_checkpoint``   a 2-iteration generator trained without masks
==========================  ====================================================
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

__all__ = [
    "gan_checkpoint",
    "gan_conditional_checkpoint",
    "gan_folder",
    "gan_image_only_checkpoint",
    "gan_image_only_folder",
    "gan_run",
    "tiny_config",
    "tiny_pairs",
]


def tiny_config(**changes: Any) -> Any:
    """A GanConfig small enough for a few CPU iterations per second."""
    from napari_retsam.gan.config import GanConfig

    base = dict(size=32, mode="paired", unit="image", amp=False, z_dim=8, g_channels=4, g_max_channels=16, d_channels=4, d_max_channels=16,
                d_layers=2, scales=2, iterations=3, batch_size=2, seed=0, sample_every=2, checkpoint_every=2)
    base.update(changes)
    return GanConfig(**base)


def tiny_pairs(n: int = 4, size: int = 32, masks: bool = True, seed: int = 0) -> Any:
    """``n`` synthetic fundus pairs prepared at ``size`` px."""
    from napari_retsam.data import synthetic_fundus
    from napari_retsam.gan.data import PreparedPairs, prepare_sample

    images, msks, fovs = [], [], []
    for i in range(n):
        s = synthetic_fundus(seed + i, 64)
        img, m, f = prepare_sample(s.image, s.vessels if masks else None, s.fov, size)
        images.append(img)
        msks.append(m)
        fovs.append(f)
    return PreparedPairs(np.stack(images), np.stack(msks) if masks else None, np.stack(fovs),
                         [f"s{i}" for i in range(n)])


@pytest.fixture(scope="session")
def gan_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_retsam.data import write_synthetic_folder

    return write_synthetic_folder(tmp_path_factory.mktemp("gan_folder"), 4, seed=0, size=64)


@pytest.fixture(scope="session")
def gan_image_only_folder(gan_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gan_image_only")
    shutil.copytree(gan_folder / "images", root / "images")
    shutil.copytree(gan_folder / "fov", root / "fov")
    return root


def _train(out: Path, pairs: Any, **changes: Any) -> Path:
    from napari_retsam.gan.train import train_gan

    train_gan(tiny_config(**changes), pairs, out, dataset_info={"name": "synthetic", "split": "all"})
    return out


@pytest.fixture(scope="session")
def gan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("gan_run"), tiny_pairs())


@pytest.fixture(scope="session")
def gan_checkpoint(gan_run: Path) -> Path:
    return gan_run / "generator_last.pt"


@pytest.fixture(scope="session")
def gan_conditional_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = _train(tmp_path_factory.mktemp("gan_cond"), tiny_pairs(), mode="conditional", iterations=2)
    return out / "generator_last.pt"


@pytest.fixture(scope="session")
def gan_image_only_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = _train(tmp_path_factory.mktemp("gan_img"), tiny_pairs(masks=False), iterations=2)
    return out / "generator_last.pt"
