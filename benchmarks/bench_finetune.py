"""Fine-tuning throughput: cached frozen-encoder embeddings vs the encoder at every step.

Both runs use the same vit_b-shaped random SAM (ViT-B/16 encoder at 1024 px,
256-channel prompt encoder and mask decoder, Feature Fusion Block), the same
synthetic fundus images, batch size and seed, on the CPU, side by side in one
process. Steps/second are measured over the optimizer steps only (the one-off
embedding of each tile in the cached run is reported separately).

    OMP_NUM_THREADS=2 python benchmarks/bench_finetune.py [--steps 8] [--encoder-steps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from napari_retsam.data import synthetic_fundus
from napari_retsam.sam import build_sam
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
    model = build_sam("vit_b", seed=0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    n_params = sum(p.numel() for p in model.parameters())

    def run(cache: bool, steps: int) -> tuple[float, float]:
        model.load_state_dict(state)
        config = FinetuneConfig(model_type="vit_b", epochs=1000, max_steps=steps, batch_size=args.batch_size,
                                lr=1e-4, warmup_steps=1, n_views=1, tile=0, val_fraction=0.0, device="cpu",
                                cache_embeddings=cache)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = train(model, items, [], config, out)
            total = time.perf_counter() - start
        return result.steps_per_second, total

    cached_rate, cached_total = run(True, args.steps)
    encoder_rate, encoder_total = run(False, args.encoder_steps)
    print(f"model: vit_b-shaped random SAM, {n_params / 1e6:.1f} M parameters; CPU, {args.threads} threads; "
          f"batch {args.batch_size}; {len(items)} images {args.size}×{args.size}")
    print(f"{'mode':<28}{'steps':>7}{'steps/s':>10}{'s/step':>9}{'wall s':>9}")
    print(f"{'cached embeddings':<28}{args.steps:>7}{cached_rate:>10.3f}{1 / cached_rate:>9.3f}{cached_total:>9.1f}")
    print(f"{'encoder at every step':<28}{args.encoder_steps:>7}{encoder_rate:>10.3f}{1 / encoder_rate:>9.3f}"
          f"{encoder_total:>9.1f}")
    print(f"speed-up (cached / encoder every step): {cached_rate / encoder_rate:.1f}x")


if __name__ == "__main__":
    main()
