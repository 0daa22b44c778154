"""GAN synthesis of paired fundus images and vessel masks.

Light package root: nothing here imports torch. The modules are

- :mod:`~napari_retsam.gan.config` – :class:`GanConfig`, the architecture and
  training settings (plain Python, stored in every checkpoint);
- :mod:`~napari_retsam.gan.models` – the generator (noise → RGB image + vessel
  mask, or vessel mask + noise → image) and the multi-scale PatchGAN
  discriminators D_1..D_K;
- :mod:`~napari_retsam.gan.losses` – the least-squares GAN loss and the
  feature-matching loss L_FM;
- :mod:`~napari_retsam.gan.data` – FOV-aware training pairs from any dataset the
  readers open, with flips and rotations;
- :mod:`~napari_retsam.gan.train` – the resumable training loop;
- :mod:`~napari_retsam.gan.checkpoint` – reading and checking generator checkpoints;
- :mod:`~napari_retsam.gan.sample` – deterministic sampling and dataset export;
- :mod:`~napari_retsam.gan.masks` – flipped/rotated/elastically warped masks for
  the conditional generator;
- :mod:`~napari_retsam.gan.report` – the FID-free quality report;
- :mod:`~napari_retsam.gan.imaging` – sample grids and PNG writing.
"""

from __future__ import annotations

from napari_retsam.gan.config import GanConfig

__all__ = ["GanConfig"]
