"""Fine-tuning throughput: cached frozen-encoder embeddings vs the encoder at every step.

Both runs use the same vit_b-shaped random SAM (ViT-B/16 encoder at 1024 px,
256-channel prompt encoder and mask decoder, Feature Fusion Block), the same
synthetic fundus images, batch size and seed, on the CPU, side by side in one
process. Steps/second = optimizer steps / time inside the steps
(``TrainResult.steps_per_second``: batching, forward, backward, update; not the
one-off embedding of each tile, checkpoint writing or validation); the wall
column is the whole call including those.

    OMP_NUM_THREADS=2 python benchmarks/bench_finetune.py [--steps 8] [--encoder-steps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from napari_retsam.data import synthetic_fundus
from napari_retsam.sam import build_sam, load_sam
from napari_retsam.sam.checkpoints import save_official_style
from napari_retsam.training.config import FinetuneConfig
from napari_retsam.training.data import TrainItem
from napari_retsam.training.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps with cached embeddings")
    parser.add_argument("--encoder-steps", type=int, default=3, help="optimizer steps running the encoder")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--size", type=int, default=512, help="synthetic image size in pixels")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    items = []
    for k in range(2):
        f = synthetic_fundus(seed=k, size=args.size)
        items.append(TrainItem(f"syn{k}", f.image, f.vessels, f.fov))
    work = Path(tempfile.mkdtemp(prefix="bench_finetune_"))
    base = save_official_style(build_sam("vit_b", seed=0), work / "sam_vit_b_random.pth")

    def run(cache: bool, steps: int) -> tuple[float, float]:
        model = load_sam(base, model_type="vit_b", device="cpu")  # decoder-only checkpoints, as with a real base
        config = FinetuneConfig(model_type="vit_b", checkpoint=str(base), epochs=1000, max_steps=steps,
                                batch_size=args.batch_size, lr=1e-4, warmup_steps=1, n_views=1, tile=0,
                                val_fraction=0.0, device="cpu", cache_embeddings=cache)
        start = time.perf_counter()
        result = train(model, items, [], config, work / ("cached" if cache else "encoder"))
        return result.steps_per_second, time.perf_counter() - start

    n_params = sum(p.numel() for p in load_sam(base, model_type="vit_b", device="cpu").parameters())

    cached_rate, cached_total = run(True, args.steps)
    encoder_rate, encoder_total = run(False, args.encoder_steps)
    print(f"model: vit_b-shaped random SAM, {n_params / 1e6:.1f} M parameters; CPU, {args.threads} threads; "
          f"batch {args.batch_size}; {len(items)} images {args.size}×{args.size}")
    print(f"{'mode':<28}{'steps':>7}{'steps/s':>10}{'s/step':>9}{'wall s':>9}")
    print(f"{'cached embeddings':<28}{args.steps:>7}{cached_rate:>10.3f}{1 / cached_rate:>9.3f}{cached_total:>9.1f}")
    print(f"{'encoder at every step':<28}{args.encoder_steps:>7}{encoder_rate:>10.3f}{1 / encoder_rate:>9.3f}"
          f"{encoder_total:>9.1f}")
    print(f"speed-up (cached / encoder every step): {cached_rate / encoder_rate:.1f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
