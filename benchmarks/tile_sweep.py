"""Tile-size sweep on DRIVE: vessel AUC and time of each window size, side by side.

LiteMedSAM's encoder always sees 256 × 256 pixels, so the window size decides
the scale: a 128-px window is enlarged 2× (one 64 × 64 embedding cell spans 2
image pixels instead of 4) and a DRIVE image needs 30 such windows instead of 9.
Every row fine-tunes the bundled LiteMedSAM decoder-only with the recipe's
defaults (BSD + BCE, fusion block with its pixel branch) on the same DRIVE
training images for the same number of steps, with that window size for
training and inference (overlap = window / 8), and is scored on the same DRIVE
test images (FOV, pooled, 1st annotator, threshold 0.5) — the short protocol of
``ablation_loss_fusion.py``. Then the first segmentation of one test image
(embedding included, default precision) and the same call repeated (``cached_s``:
embeddings cached and, since the Segmenter memoises decoded prompts, no decoding
either; ``bench_resegment.py`` measures decoder-only calls) are
timed for every window size with its own fine-tuned model, interleaved over ``--repeats`` rounds so the sizes
share the machine's state.

    python benchmarks/tile_sweep.py --root ../shared/data/DRIVE --out tile-sweep
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def _time_segmentation(root: str, out: Path, tiles: list[int], repeats: int) -> dict[int, dict[str, float]]:
    """Median first-call and cached seconds of segmenting DRIVE's first test image per window size.

    Each size runs its own fine-tuned model (``out/tile<N>/best.pt``, so the
    cached figure includes the fusion block's pixel branch), or the plain model
    where the accuracy part was skipped.
    """
    from napari_retsam.data import mask_bounding_box, open_dataset
    from napari_retsam.sam import EmbeddingCache, Segmenter, load_sam
    from napari_retsam.sam.tiling import tile_grid

    sample = open_dataset("drive", root, "test")[0]
    box = mask_bounding_box(sample.fov)[None]
    models = {}
    for tile in tiles:
        finetuned = out / f"tile{tile}" / "best.pt"
        models[tile] = load_sam(model_type="lite_medsam", device="cpu",
                                finetuned=finetuned if finetuned.exists() else None).eval()
    first: dict[int, list[float]] = {t: [] for t in tiles}
    cached: dict[int, list[float]] = {t: [] for t in tiles}
    for _ in range(repeats):
        for tile in tiles:
            segmenter = Segmenter(models[tile], cache=EmbeddingCache())
            start = time.perf_counter()
            segmenter.segment(sample.image, box, tile=tile, overlap=tile // 8)
            first[tile].append(time.perf_counter() - start)
            start = time.perf_counter()
            segmenter.segment(sample.image, box, tile=tile, overlap=tile // 8)
            cached[tile].append(time.perf_counter() - start)
    height, width = sample.image.shape[:2]
    return {t: {"windows": len(tile_grid(height, width, t, t // 8)),
                "first_s": round(statistics.median(first[t]), 2), "cached_s": round(statistics.median(cached[t]), 3)}
            for t in tiles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tiles", type=int, nargs="+", default=[96, 128, 192, 256])
    parser.add_argument("--train-images", type=int, default=6)
    parser.add_argument("--test-images", type=int, default=6)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=2, help="timing rounds (default 2)")
    parser.add_argument("--skip-accuracy", action="store_true", help="only time the window sizes")
    parser.add_argument("--skip-timing", action="store_true", help="only fine-tune and score (time later, idle)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from _protocol import finetune_and_evaluate

    from napari_retsam.data import open_dataset
    from napari_retsam.training.data import items_from_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result_file = out / "tile_sweep.json"
    done = json.loads(result_file.read_text()) if result_file.exists() else {"rows": {}}
    if not args.skip_accuracy:
        train_items = items_from_dataset("drive", args.root, "train", args.train_images, 1)
        test = list(open_dataset("drive", args.root, "test"))[: args.test_images]
        done["protocol"] = {"train_images": args.train_images, "test_images": args.test_images, "steps": args.steps,
                            "views": 1, "batch": 8, "seed": 0, "overlap": "window / 8", "threshold": 0.5}
        for tile in args.tiles:
            if str(tile) in done["rows"]:
                continue
            change = {"tile": tile, "overlap": tile // 8}
            done["rows"][str(tile)] = finetune_and_evaluate(change, train_items, test, out / "embedding_cache",
                                                            out / f"tile{tile}", args.steps)
            print(tile, json.dumps(done["rows"][str(tile)]), flush=True)
            result_file.write_text(json.dumps(done, indent=2))
    if args.skip_timing:
        return
    done["timing"] = {str(t): v for t, v in _time_segmentation(args.root, out, args.tiles, args.repeats).items()}
    done["timing_protocol"] = {"image": "DRIVE 01_test", "rounds": args.repeats, "precision": "default",
                               "threads": torch.get_num_threads()}
    result_file.write_text(json.dumps(done, indent=2))
    protocol = done.get("protocol", {})
    print(f"| window | windows per DRIVE image | AUC | F1 | first segmentation s | same call again s |  "
          f"({protocol.get('train_images')} training images, {protocol.get('steps')} steps; "
          f"{protocol.get('test_images')} test images)")
    print("|---|---|---|---|---|---|")
    for tile in args.tiles:
        row, timing = done["rows"].get(str(tile), {}), done["timing"][str(tile)]
        auc, f1 = (f"{row['auc']:.4f}", f"{row['f1']:.4f}") if row else ("—", "—")
        print(f"| {tile} px | {timing['windows']} | {auc} | {f1} | {timing['first_s']} | {timing['cached_s']} |")


if __name__ == "__main__":
    main()
