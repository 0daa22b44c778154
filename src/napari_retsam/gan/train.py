"""Training of the fundus/vessel GAN (torch; no Qt).

One iteration (B pairs, real x = (image, mask) in [-1, 1]):

1. z ~ N(0, I); fake = G(z) (paired) or G(z, mask, fov) (conditional); the
   FOV is applied (image black, mask 0 outside it): the pair's own FOV for
   patches, the FOV template for whole images.
2. Discriminator step: L_D = Σ_k [mean((D_k(x) − 1)²) + mean(D_k(fake)²)]
   (fake detached), one Adam step on D_1..D_K.
3. Generator step: L_G = Σ_k mean((D_k(fake) − 1)²) + β Σ_k L_FM(G, D_k),
   one Adam step on G (see :mod:`napari_retsam.gan.losses`).

Patch training (``config.unit == "patch"``): each pair is a random S×S crop of
a native-resolution training image centred on a FOV pixel
(:func:`napari_retsam.gan.data.random_crop`), then a random symmetry.

Precision: with ``config.amp`` both networks run under bf16 autocast on a CPU
with native bf16 (and on a CUDA device that has it); the weights, the Adam
state and the losses stay float32.

Randomness: the weights come from ``seed``; the noise, the crops and the augmentation of
iteration t on process ``rank`` come from a generator seeded with
SeedSequence([seed, rank, t]); the data order is DistributedSampler's
permutation of epoch e (seed ``seed``). So the training state is the weights,
the Adam moments and the counters, and resuming from a checkpoint reproduces
the uninterrupted run exactly (on the same device and torch version).

Files in the output folder (written by rank 0 only, atomically):

- ``last.pt``: full training state (generator checkpoint, discriminator, both
  optimiser states, iteration, sampler cursor, torch RNG state);
- ``generator_last.pt``: the generator checkpoint (see
  :mod:`napari_retsam.gan.checkpoint`);
- ``losses.jsonl``: one JSON object per iteration;
- ``samples/iter_NNNNNN.png``: a grid of fixed-noise samples every
  ``sample_every`` iterations;
- ``config.json``: the settings.

A non-finite loss stops training before the optimiser step with a
:class:`GanDivergedError` naming the iteration; the last checkpoint on disk (the
last good one) is kept.

Stopping follows the package's progress/cancel contract
(:mod:`napari_retsam.progress`): ``should_stop()`` is polled before every
iteration; when it turns True the run writes ``last.pt`` (and
``generator_last.pt``) and raises :class:`~napari_retsam.progress.Cancelled`
whose ``partial`` is the :class:`TrainResult` so far, with ``status ==``
:data:`~napari_retsam.progress.STOPPED` (resume from its ``state_checkpoint``).

Multi-GPU: run ``torchrun --nproc_per_node N -m napari_retsam.cli.main gan train ...``;
when ``WORLD_SIZE`` > 1 the process group is initialised (NCCL on CUDA, gloo on
CPU), G and D are wrapped in DistributedDataParallel, each process reads its
DistributedSampler share and only rank 0 writes files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_retsam.errors import RetsamInputError
from napari_retsam.gan.checkpoint import GENERATOR_FORMAT, TRAIN_FORMAT, load_checkpoint_dict
from napari_retsam.gan.config import GanConfig
from napari_retsam.gan.data import NativePairs, PreparedPairs, crop_pairs, dihedral, fov_template, random_crop
from napari_retsam.gan.imaging import sample_grid, to_uint8_image, write_png
from napari_retsam.gan.losses import feature_matching_loss, lsgan_d_loss, lsgan_g_loss
from napari_retsam.gan.models import build_discriminator, build_generator
from napari_retsam.io_utils import atomic_save_torch, atomic_write_bytes, ensure_writable_dir
from napari_retsam.progress import STOPPED, Cancelled, ProgressFn, StopFn, report

__all__ = ["GanDivergedError", "TrainEvent", "TrainResult", "GanTrainer", "train_gan", "distributed_context",
           "read_loss_log"]

GRID_SAMPLES = 8


class GanDivergedError(RetsamInputError):
    """A loss became NaN or infinite; training stopped."""


@dataclass
class TrainEvent:
    """What :meth:`GanTrainer.iter_train` yields after each iteration."""

    iteration: int
    total: int
    losses: dict[str, float]
    grid: np.ndarray | None = None  # uint8 sample grid when one was made this iteration
    checkpoint: Path | None = None  # set when a checkpoint was written this iteration


@dataclass
class TrainResult:
    """Outcome of a GAN run: returned when it finished, or ``Cancelled.partial`` when it was stopped."""

    iteration: int
    status: str  # "finished" | STOPPED (STOPPED: only as Cancelled.partial)
    out_dir: Path
    generator_checkpoint: Path
    state_checkpoint: Path
    last_losses: dict[str, float] = field(default_factory=dict)
    message: str = ""


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_context(device: str) -> DistContext:
    """Initialise ``torch.distributed`` when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        return DistContext(dist.get_rank(), dist.get_world_size(), True)
    return DistContext(dist.get_rank(), dist.get_world_size(), False)


def _iteration_generator(seed: int, rank: int, iteration: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, rank, iteration]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def gan_autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the device runs it natively (a CPU with AVX512-BF16/AMX, a CUDA GPU with
    bf16), else None: float32. GAN losses are not scaled, so float16 is never used."""
    if not enabled:
        return None
    if device.type == "cpu":
        from napari_retsam.sam.device import cpu_bf16_supported

        return torch.bfloat16 if cpu_bf16_supported() else None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


class GanTrainer:
    """Owns the networks, optimisers and counters of one training run.

    ``pairs``: the training data (:func:`napari_retsam.gan.data.training_pairs`):
    :class:`NativePairs` for patch training, :class:`PreparedPairs` at the GAN
    resolution for whole images.
    ``resume``: a ``last.pt`` written by a previous run with the same
    architecture; training continues from its iteration up to ``config.iterations``.
    """

    def __init__(self, config: GanConfig, pairs: PreparedPairs | NativePairs, out_dir: str | os.PathLike[str], *,
                 device: str = "cpu", resume: str | os.PathLike[str] | None = None,
                 dataset_info: dict[str, Any] | None = None, dist_ctx: DistContext | None = None) -> None:
        self.patches = config.unit == "patch"
        if self.patches != isinstance(pairs, NativePairs):
            raise RetsamInputError("patch training needs native-resolution images (prepare_native) and "
                                   "whole-image training needs prepared pairs (prepare_pairs)")
        if not self.patches and pairs.size != config.size:
            raise RetsamInputError(f"training pairs are {pairs.size} px but the GAN is {config.size} px")
        self.has_masks = pairs.masks is not None
        if config.mode == "conditional" and not self.has_masks:
            raise RetsamInputError("the conditional GAN needs a dataset with vessel masks")
        self.config = config
        self.pairs = pairs
        self.device = torch.device(device)
        self.dist = dist_ctx or DistContext()
        self.out_dir = Path(out_dir)
        if self.dist.is_main:
            ensure_writable_dir(self.out_dir)
        self.dataset_info = dict(dataset_info or {})
        self.dataset_info.setdefault("n_images", len(pairs))
        # Whole images share one FOV template; patches carry their own FOV.
        self.fov_template = (np.ones((config.size, config.size), bool) if self.patches
                             else fov_template(pairs.fovs))
        self._fov_t = torch.from_numpy(self.fov_template.astype(np.float32)).to(self.device)[None, None]
        self.amp_dtype = gan_autocast_dtype(self.device, config.amp)
        self.G = build_generator(config, seed=config.seed).to(self.device)
        self.D = build_discriminator(config, with_mask=self.has_masks, seed=config.seed + 1).to(self.device)
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=betas)
        self.iteration = 0
        self.cursor = 0  # samples consumed by this rank from the sampler's epoch sequence
        self.last_good: Path | None = None
        self._saved_at = -1
        self.last_losses: dict[str, float] = {}  # of the latest iteration of this run
        self.grid_z = torch.randn(GRID_SAMPLES, config.z_dim,
                                  generator=torch.Generator().manual_seed(config.seed + 99991))
        self.grid_masks = self.grid_fovs = None
        if config.mode == "conditional":
            assert pairs.masks is not None
            if self.patches:
                grid = crop_pairs(pairs, GRID_SAMPLES, config.size, seed=config.seed + 7)
                masks, fovs = grid.masks, grid.fovs
            else:
                idx = np.arange(GRID_SAMPLES) % len(pairs)
                masks, fovs = pairs.masks[idx], np.broadcast_to(self.fov_template, (GRID_SAMPLES, *self.fov_template.shape))
            assert masks is not None
            self.grid_masks = torch.from_numpy(masks.astype(np.float32))[:, None]
            self.grid_fovs = torch.from_numpy(np.ascontiguousarray(fovs).astype(np.float32))[:, None]
        if resume is not None:
            self._load_state(resume)
        self.G_train, self.D_train = self.G, self.D
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.G_train = DDP(self.G, device_ids=ids)
            self.D_train = DDP(self.D, device_ids=ids)
        self.log_path = self.out_dir / "losses.jsonl"
        if self.dist.is_main:
            self._truncate_log()
            atomic_write_bytes(self.out_dir / "config.json",
                               json.dumps({"config": config.to_dict(), "dataset": self.dataset_info,
                                           "has_masks": self.has_masks}, indent=2).encode())

    # ----------------------------------------------------------------- state
    @property
    def state_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def generator_path(self) -> Path:
        return self.out_dir / "generator_last.pt"

    def generator_checkpoint(self) -> dict[str, Any]:
        """The generator checkpoint dict (see :mod:`napari_retsam.gan.checkpoint`)."""
        return {
            "format": GENERATOR_FORMAT,
            "format_version": 1,
            "config": self.config.to_dict(),
            "generator": {k: v.detach().cpu().clone() for k, v in self.G.state_dict().items()},
            "has_masks": self.has_masks,
            "fov_template": torch.from_numpy(self.fov_template.copy()),
            "iteration": self.iteration,
            "dataset": self.dataset_info,
        }

    def state_dict(self) -> dict[str, Any]:
        """The full training state (plain dict of tensors and plain values)."""
        return {
            "format": TRAIN_FORMAT,
            "format_version": 1,
            "generator_checkpoint": self.generator_checkpoint(),
            "discriminator": {k: v.detach().cpu().clone() for k, v in self.D.state_dict().items()},
            "discriminator_in_channels": self.D.in_channels,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "iteration": self.iteration,
            "cursor": self.cursor,
            "world_size": self.dist.world_size,
            "torch_rng_state": torch.get_rng_state(),
        }

    def save(self) -> Path | None:
        """Write ``last.pt`` and ``generator_last.pt`` (rank 0 only); returns the state path."""
        self._saved_at = self.iteration
        if not self.dist.is_main:
            return None
        atomic_save_torch(self.state_dict(), self.state_path)
        atomic_save_torch(self.generator_checkpoint(), self.generator_path)
        self.last_good = self.state_path
        return self.state_path

    def _load_state(self, path: str | os.PathLike[str]) -> None:
        data = load_checkpoint_dict(path)
        if data.get("format") != TRAIN_FORMAT:
            raise RetsamInputError(f"{path} is not a full GAN training state; resume from the last.pt of a run")
        saved = GanConfig.from_dict(data["generator_checkpoint"]["config"])
        if saved.architecture != self.config.architecture:
            diff = ", ".join(f"{k}={v} (checkpoint) vs {self.config.architecture[k]}"
                             for k, v in saved.architecture.items() if self.config.architecture[k] != v)
            raise RetsamInputError(f"cannot resume from {path}: different settings: {diff}")
        if bool(data["generator_checkpoint"]["has_masks"]) != self.has_masks:
            raise RetsamInputError(f"cannot resume from {path}: it was trained "
                                   f"{'with' if not self.has_masks else 'without'} vessel masks, this dataset differs")
        self.G.load_state_dict(data["generator_checkpoint"]["generator"])
        self.D.load_state_dict(data["discriminator"])
        self.opt_g.load_state_dict(data["opt_g"])
        self.opt_d.load_state_dict(data["opt_d"])
        self.iteration = int(data["iteration"])
        self.cursor = int(data["cursor"])
        torch.set_rng_state(data["torch_rng_state"])
        if self.iteration > self.config.iterations:
            raise RetsamInputError(f"{path} is already at iteration {self.iteration}, "
                                   f"beyond the requested {self.config.iterations}")
        self.last_good = Path(path)
        self._saved_at = self.iteration if Path(path).resolve() == self.state_path.resolve() else -1

    def _truncate_log(self) -> None:
        """Keep only log lines up to the current iteration (after a resume)."""
        if not self.log_path.exists():
            return
        kept = []
        for line in self.log_path.read_text().splitlines():
            try:
                if json.loads(line)["iteration"] <= self.iteration:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        atomic_write_bytes(self.log_path, ("\n".join(kept) + ("\n" if kept else "")).encode())

    # ------------------------------------------------------------------ data
    def _batch_indices(self) -> np.ndarray:
        from torch.utils.data import DistributedSampler

        n = len(self.pairs)
        sampler = DistributedSampler(range(n), num_replicas=self.dist.world_size, rank=self.dist.rank,
                                     shuffle=True, seed=self.config.seed, drop_last=False)
        per_epoch = len(sampler)
        out = []
        epoch_cache: dict[int, list[int]] = {}
        for j in range(self.cursor, self.cursor + self.config.batch_size):
            epoch, pos = divmod(j, per_epoch)
            if epoch not in epoch_cache:
                sampler.set_epoch(epoch)
                epoch_cache[epoch] = list(iter(sampler))
            out.append(epoch_cache[epoch][pos])
        return np.asarray(out)

    def _real_batch(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """B real pairs: image B×3×S×S in [-1, 1], mask B×1×S×S in {0, 1} (or None), FOV B×1×S×S."""
        idx = self._batch_indices()
        ks = torch.randint(0, 8, (len(idx),), generator=gen).tolist()
        size = self.config.size
        if self.patches:
            seeds = torch.randint(0, 2**31 - 1, (len(idx),), generator=gen).tolist()
            crops = [random_crop(self.pairs, int(i), size, np.random.default_rng(s)) for i, s in zip(idx, seeds)]
            imgs = np.stack([dihedral(c[0], k) for c, k in zip(crops, ks)])
            msk = None if self.pairs.masks is None else np.stack([dihedral(c[1], k) for c, k in zip(crops, ks)])
            fovs = np.stack([dihedral(c[2], k) for c, k in zip(crops, ks)])
        else:
            imgs = np.stack([dihedral(self.pairs.images[i], k) for i, k in zip(idx, ks)])
            msk = None if self.pairs.masks is None else np.stack([dihedral(self.pairs.masks[i], k)
                                                                  for i, k in zip(idx, ks)])
            fovs = np.broadcast_to(self.fov_template, (len(idx), size, size))
        image = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        fov = torch.from_numpy(np.ascontiguousarray(fovs).astype(np.float32))[:, None]
        mask = None if msk is None else torch.from_numpy(msk.astype(np.float32))[:, None]
        return image.to(self.device), (None if mask is None else mask.to(self.device)), fov.to(self.device)

    @staticmethod
    def _apply_fov(image: torch.Tensor, mask: torch.Tensor | None, fov: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        image = image * fov - (1.0 - fov)
        return image, (None if mask is None else mask * fov)

    def _autocast(self) -> Any:
        import contextlib

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _d_input(self, image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if not self.has_masks:
            return image
        assert mask is not None
        return torch.cat([image, mask * 2.0 - 1.0], dim=1)

    # ----------------------------------------------------------------- steps
    def _check_finite(self, losses: dict[str, torch.Tensor]) -> None:
        values = torch.stack([v.detach().float() for v in losses.values()])
        if self.dist.world_size > 1:
            import torch.distributed as dist

            flag = (~torch.isfinite(values)).any().float().reshape(1)
            dist.all_reduce(flag)
            bad = bool(flag.item() > 0)
        else:
            bad = not bool(torch.isfinite(values).all())
        if bad:
            shown = ", ".join(f"{k}={v.detach().item():.4g}" for k, v in losses.items())
            where = (f"the last good checkpoint {self.last_good} was kept" if self.last_good is not None
                     else "no checkpoint had been written yet")
            raise GanDivergedError(f"GAN training stopped: non-finite loss at iteration {self.iteration + 1} "
                                   f"({shown}); {where}; lower the learning rate or the feature-matching weight")

    def train_step(self) -> dict[str, float]:
        """One discriminator and one generator update; returns the losses."""
        cfg = self.config
        gen = _iteration_generator(cfg.seed, self.dist.rank, self.iteration)
        real_img, real_mask, real_fov = self._real_batch(gen)
        z = torch.randn(real_img.shape[0], cfg.z_dim, generator=gen).to(self.device)
        self.G_train.train()
        self.D_train.train()
        with self._autocast():
            if cfg.mode == "conditional":
                fake_img, logits = self.G_train(z, real_mask, real_fov)
            else:
                fake_img, logits = self.G_train(z)
        fake_mask = torch.sigmoid(logits.float()) if self.has_masks else None
        fake_img, fake_mask = self._apply_fov(fake_img.float(), fake_mask, real_fov)
        real_x = self._d_input(real_img, real_mask)
        fake_x = self._d_input(fake_img, fake_mask)
        b = real_x.shape[0]

        # Discriminator: real and (detached) fake in one forward pass.
        with self._autocast():
            outs = self.D_train(torch.cat([real_x, fake_x.detach()], dim=0))
        outs = [[f.float() for f in feats] for feats in outs]
        d_real = [[f[:b] for f in feats] for feats in outs]
        d_fake = [[f[b:] for f in feats] for feats in outs]
        loss_d = lsgan_d_loss(d_real, d_fake)
        self._check_finite({"d_loss": loss_d})
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        # Generator: adversarial term + β · feature matching (real features detached).
        with self._autocast():
            outs = self.D_train(torch.cat([real_x, fake_x], dim=0))
        outs = [[f.float() for f in feats] for feats in outs]
        g_real = [[f[:b] for f in feats] for feats in outs]
        g_fake = [[f[b:] for f in feats] for feats in outs]
        loss_gan = lsgan_g_loss(g_fake)
        loss_fm = feature_matching_loss(g_real, g_fake)
        loss_g = loss_gan + cfg.beta * loss_fm
        self._check_finite({"d_loss": loss_d, "g_gan": loss_gan, "g_fm": loss_fm})
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.opt_d.zero_grad(set_to_none=True)  # drop the D gradients of the generator pass

        self.iteration += 1
        self.cursor += cfg.batch_size
        self.last_losses = {"d_loss": loss_d.item(), "g_gan": loss_gan.item(), "g_fm": loss_fm.item(),
                            "g_loss": loss_g.item()}
        return self.last_losses

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        """uint8 grid of the fixed-noise samples (image above mask)."""
        self.G.eval()
        z = self.grid_z.to(self.device)
        if self.grid_masks is not None and self.grid_fovs is not None:
            fov = self.grid_fovs.to(self.device)
            img, logits = self.G(z, self.grid_masks.to(self.device), fov)
        else:
            fov = self._fov_t
            img, logits = self.G(z)
        m = torch.sigmoid(logits) if self.has_masks else None
        img, m = self._apply_fov(img, m, fov)
        self.G.train()
        images = to_uint8_image(img.cpu().numpy())
        return sample_grid(images, None if m is None else (m[:, 0] > 0.5).cpu().numpy())

    # ------------------------------------------------------------------- run
    def stop_requested(self, should_stop: StopFn | None) -> bool:
        """``should_stop()``; in a distributed run every rank stops when one asks (the flag is all-reduced)."""
        wants = bool(should_stop()) if should_stop is not None else False
        if self.dist.world_size > 1 and should_stop is not None:
            import torch.distributed as dist

            flag = torch.tensor([1.0 if wants else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            wants = bool(flag.item() > 0)
        return wants

    def result(self, status: str = "finished", message: str = "") -> TrainResult:
        """The run so far as a :class:`TrainResult`."""
        return TrainResult(self.iteration, status, self.out_dir, self.generator_path, self.state_path,
                           dict(self.last_losses), message or f"{status} at iteration {self.iteration}")

    def iter_train(self, should_stop: StopFn | None = None) -> Iterator[TrainEvent]:
        """Train up to ``config.iterations``, yielding a :class:`TrainEvent` per iteration.

        ``should_stop`` is polled before every iteration; when it returns True the
        state is saved (``last.pt``) and :class:`~napari_retsam.progress.Cancelled` is
        raised with the result so far (``status == STOPPED``) as its ``partial``.
        """
        cfg = self.config
        log = open(self.log_path, "a") if self.dist.is_main else None
        try:
            while self.iteration < cfg.iterations:
                if self.stop_requested(should_stop):
                    self._checkpoint_now(log)
                    message = (f"stopped by the user at iteration {self.iteration} of {cfg.iterations}; "
                               f"resume from {self.state_path}")
                    raise Cancelled(message, partial=self.result(STOPPED, message))
                losses = self.train_step()
                event = TrainEvent(self.iteration, cfg.iterations, losses)
                if log is not None:
                    log.write(json.dumps({"iteration": self.iteration, **losses}) + "\n")
                if cfg.sample_every and self.iteration % cfg.sample_every == 0:
                    grid = self.sample_grid()
                    event.grid = grid
                    if self.dist.is_main:
                        ensure_writable_dir(self.out_dir / "samples")
                        write_png(self.out_dir / "samples" / f"iter_{self.iteration:06d}.png", grid)
                if self.iteration % cfg.checkpoint_every == 0 or self.iteration == cfg.iterations:
                    event.checkpoint = self._checkpoint_now(log)
                yield event
            self._checkpoint_now(log)
        finally:
            if log is not None:
                log.close()

    def _checkpoint_now(self, log: Any) -> Path | None:
        """Flush the loss log and write the checkpoints, unless this iteration's are on disk already."""
        if self._saved_at == self.iteration:
            return None
        if log is not None:
            log.flush()
        return self.save()

    def run(self, progress: ProgressFn | None = None, should_stop: StopFn | None = None,
            preview: Callable[[int, np.ndarray], None] | None = None) -> TrainResult:
        """Train to the end; callbacks get progress and sample grids.

        A stop request (``should_stop``) raises :class:`~napari_retsam.progress.Cancelled`
        after ``last.pt`` is written (see :meth:`iter_train`).
        """
        for event in self.iter_train(should_stop):
            last = event.losses
            report(progress, event.iteration, event.total,
                   f"iteration {event.iteration}/{event.total}: D {last['d_loss']:.3f}, "
                   f"G {last['g_gan']:.3f} + {self.config.beta:g}·FM {last['g_fm']:.3f}")
            if preview is not None and event.grid is not None:
                preview(event.iteration, event.grid)
        return self.result()


#: What a run writes into its folder (an earlier run is recognised by any of them).
RUN_FILES: tuple[str, ...] = ("last.pt", "generator_last.pt", "losses.jsonl", "config.json", "samples")


def train_gan(config: GanConfig, pairs: PreparedPairs | NativePairs, out_dir: str | os.PathLike[str], *,
              device: str = "cpu", resume: str | os.PathLike[str] | None = None,
              dataset_info: dict[str, Any] | None = None,
              progress: ProgressFn | None = None,
              should_stop: StopFn | None = None,
              preview: Callable[[int, np.ndarray], None] | None = None,
              overwrite: bool = True) -> TrainResult:
    """Build a :class:`GanTrainer` (joining torchrun's process group if any) and run it.

    A stop request raises :class:`~napari_retsam.progress.Cancelled` (``last.pt`` written,
    ``partial`` = the :class:`TrainResult` so far), which passes through here.

    The run owns ``out_dir`` while it runs (:func:`napari_retsam.run_lock.lock_run_folder`,
    rank 0): a second run there is refused. A folder holding an earlier run
    (:data:`RUN_FILES`) is refused unless ``resume`` is a checkpoint in it or
    ``overwrite`` (the CLI's ``--overwrite``; True by default for library callers),
    in which case the earlier files are removed first.
    """
    import contextlib

    from napari_retsam._allocator import reuse_large_buffers
    from napari_retsam.run_lock import check_fresh_run_folder, clear_previous_run, lock_run_folder, resumes_in

    reuse_large_buffers()  # large activations recycled, not page-faulted anew (see napari_retsam._allocator)
    ctx = distributed_context(device)
    if ctx.world_size > 1 and device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', ctx.rank))}"
        torch.cuda.set_device(device)
    completed = False
    try:
        with lock_run_folder(out_dir, "retsam gan train") if ctx.is_main else contextlib.nullcontext():
            if ctx.is_main:
                earlier = check_fresh_run_folder(out_dir, RUN_FILES, overwrite=overwrite, resume=resume,
                                                 what="GAN run")
                if earlier and not resumes_in(resume, out_dir):
                    clear_previous_run(earlier, keep=[resume] if resume else [])
            trainer = GanTrainer(config, pairs, out_dir, device=device, resume=resume,
                                 dataset_info=dataset_info, dist_ctx=ctx)
            try:
                result = trainer.run(progress if ctx.is_main else None, should_stop,
                                     preview if ctx.is_main else None)
            except Cancelled:
                completed = True  # every rank stopped at the same iteration: they leave together
                raise
        completed = True
        return result
    finally:
        if ctx.initialised_here:
            import torch.distributed as dist

            # Ranks leave together after a completed run: a rank that exits while rank 0
            # still writes would close gloo connections under it (and abort it).
            try:
                if completed:
                    dist.barrier()
            finally:
                dist.destroy_process_group()


def read_loss_log(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """The ``losses.jsonl`` records, in order."""
    records = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records
