"""Ablation on DRIVE: the loss (BSD vs plain Dice vs Dice+BCE) and the fusion block, side by side.

Every row fine-tunes the bundled LiteMedSAM decoder-only from the same start, on
the same DRIVE training images, views, seed, steps and schedule (the recipe's
defaults otherwise), and is evaluated on the same DRIVE test images (FOV,
pooled, 1st annotator, threshold 0.5). All rows share one on-disk embedding
cache, so each training tile and test tile is embedded once for the whole run.

rows:
  BSD + BCE, fusion block (pixel branch)   the recipe
  BSD + BCE, embedding-only fusion         the method's decoder-only PEFT without the CNN branch
  BSD, fusion block                        dynamic slice selection, no BCE
  Dice (all slices), fusion block          plain soft Dice
  Dice + BCE (all slices), fusion block

A scaled-down protocol (``--train-images``, ``--steps``, ``--test-images``) so
the whole ablation fits in well under an hour on two CPU cores; the numbers
compare the rows with each other, the recipe's full-scale numbers are in
``finetune_recipe.py``.

    python benchmarks/ablation_loss_fusion.py --root ../shared/data/DRIVE --out ablation
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS = [
    ("BSD + BCE, fusion block (recipe)", {"loss": "bsd+bce", "selection": "nonempty", "pixel_branch": 16}),
    ("BSD + BCE, embedding-only fusion", {"loss": "bsd+bce", "selection": "nonempty", "pixel_branch": 0}),
    ("BSD, fusion block", {"loss": "bsd", "selection": "nonempty", "pixel_branch": 16}),
    ("Dice (all slices), fusion block", {"loss": "bsd", "selection": "all", "pixel_branch": 16}),
    ("Dice + BCE (all slices), fusion block", {"loss": "bsd+bce", "selection": "all", "pixel_branch": 16}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-images", type=int, default=8)
    parser.add_argument("--test-images", type=int, default=10)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--rows", type=int, nargs="*", default=None, help="row indices to run (default: all)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    from _protocol import finetune_and_evaluate

    from napari_retsam.data import open_dataset
    from napari_retsam.training.data import items_from_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = out / "embedding_cache"
    train_items = items_from_dataset("drive", args.root, "train", args.train_images, 1)
    test = list(open_dataset("drive", args.root, "test"))[: args.test_images]
    results = []
    rows = [ROWS[i] for i in args.rows] if args.rows else ROWS
    for name, change in rows:
        run_dir = out / name.split(",")[0].replace(" ", "").replace("+", "_") / ("pix" if change["pixel_branch"] else "emb")
        results.append({"row": name, **change,
                        **finetune_and_evaluate(change, train_items, test, cache_dir, run_dir, args.steps)})
        print(json.dumps(results[-1]), flush=True)
    (out / "ablation.json").write_text(json.dumps({
        "protocol": {"train_images": args.train_images, "test_images": args.test_images, "steps": args.steps,
                     "views": 1, "batch": 8, "seed": 0, "tile": 256, "threshold": 0.5}, "rows": results}, indent=2))
    print(f"| row | AUC | F1 | Se | Sp |  (DRIVE: {args.train_images} training images, {args.steps} steps; "
          f"{args.test_images} test images)")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['row']} | {r['auc']:.4f} | {r['f1']:.4f} | {r['se']:.4f} | {r['sp']:.4f} |")


if __name__ == "__main__":
    main()
