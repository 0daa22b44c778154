"""``retsam finetune``: decoder-only fine-tuning of SAM with the BSD loss.

::

    retsam finetune --dataset NAME --root DIR [--split S] [--limit N] [--synthetic DIR ...]
                    --out DIR [--checkpoint F] [--model-type T] [--epochs N] [--max-steps N]
                    [--batch-size N] [--lr X] [--loss bsd|bsd+bce] [--tile N|0] [--device D]
                    [--resume F] [--overwrite]

writes ``DIR/last.pt``, ``DIR/best.pt`` (best validation AUC) and
``DIR/metrics.jsonl``; the run owns DIR while it runs (a second run there is
refused), and a DIR holding an earlier run is refused unless ``--resume`` continues
it or ``--overwrite`` replaces it. Multi-GPU / multi-node: start it with torchrun, e.g.
``torchrun --nproc-per-node 4 -m napari_retsam finetune ...`` (DDP; the batch
size is the global batch). Only the standard library is imported at module
level; torch loads inside :func:`run`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from napari_retsam.options import MODEL_TYPE_HELP, model_type_arg

__all__ = ["register", "run"]


def _config_defaults() -> dict:
    from dataclasses import fields

    from napari_retsam.training.config import FinetuneConfig

    return {f.name: f.default for f in fields(FinetuneConfig) if not callable(f.default_factory)}


_DEFAULTS = _config_defaults()


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune SAM's fusion block + mask decoder on vessel annotations (BSD loss)",
        description=(
            "Decoder-only fine-tuning of SAM (image and prompt encoders frozen, embeddings cached; "
            "Feature Fusion Block + mask decoder trained) with the batch-size-based dynamic Dice loss. "
            "Writes OUT/last.pt, OUT/best.pt (by validation AUC) and OUT/metrics.jsonl."
        ),
        epilog=(
            "examples:\n"
            "  retsam finetune --dataset drive --root data/DRIVE --out runs/drive --epochs 20 --tile 512\n"
            "  retsam finetune --dataset drive --root data/DRIVE --synthetic gan_out/ --synthetic-ratio 0.3 "
            "--out runs/mix\n"
            "  retsam finetune --dataset drive --root data/DRIVE --out runs/drive --resume runs/drive/last.pt\n"
            "  torchrun --nproc-per-node 2 -m napari_retsam finetune --dataset drive --root data/DRIVE "
            "--out runs/ddp --device cuda"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help="dataset kind: drive, stare, chase or folder")
    data.add_argument("--root", help="dataset root folder")
    data.add_argument("--split", default="train", help="training split: train, test or all (default: train)")
    data.add_argument("--limit", type=int, default=0, help="use only the first N images (0 = all)")
    data.add_argument("--annotator", type=int, default=1, help="gold-standard annotator (default: 1)")
    data.add_argument("--val-split", default=None,
                      help="validate on this split of the dataset (default: hold out --val-fraction of training)")
    data.add_argument("--val-fraction", type=float, default=_DEFAULTS["val_fraction"],
                      help=f"fraction of the real training images held out for validation "
                      f"(default: {_DEFAULTS['val_fraction']})")
    data.add_argument("--synthetic", nargs="+", action="extend", default=[], metavar="DIR",
                      help="generic folders of synthetic images/masks (e.g. GAN exports) to mix in")
    data.add_argument("--synthetic-ratio", type=float, default=0.5,
                      help="fraction of the training pixels taken from synthetic images, in [0, 1); counted in pixels, so a "
                           "256-px GAN patch weighs one tile and a whole fundus about nine (default: 0.5)")
    model = parser.add_argument_group("model")
    model.add_argument("--checkpoint", default=None,
                       help="base SAM checkpoint (official .pth or a napari-retsam .pt; default: cached official)")
    model.add_argument("--model-type", default=None, type=model_type_arg, help=MODEL_TYPE_HELP)
    model.add_argument("--full", action="store_true", help="full fine-tuning (encoder too; needs a big GPU)")
    train = parser.add_argument_group("training")
    train.add_argument("--out", required=True, help="output folder for last.pt, best.pt, metrics.jsonl")
    # Defaults live in FinetuneConfig (the recipe); None here means "the config's default".
    d = _DEFAULTS
    train.add_argument("--epochs", type=int, default=None, help=f"epochs (default: {d['epochs']})")
    train.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (0 = no limit)")
    train.add_argument("--batch-size", type=int, default=None, help=f"global batch size in tiles (default: {d['batch_size']})")
    train.add_argument("--accumulate", type=int, default=None, help="micro-batches per optimizer step (default: 1)")
    train.add_argument("--lr", type=float, default=None, help=f"peak AdamW learning rate (default: {d['lr']:g})")
    train.add_argument("--weight-decay", type=float, default=None, help=f"AdamW weight decay (default: {d['weight_decay']:g})")
    train.add_argument("--warmup-steps", type=int, default=None, help=f"linear warm-up steps (default: {d['warmup_steps']})")
    train.add_argument("--loss", choices=("bsd", "bsd+bce"), default=None, help=f"loss (default: {d['loss']})")
    train.add_argument("--bce-weight", type=float, default=None, help="weight of the BCE term for bsd+bce")
    train.add_argument("--selection", choices=("nonempty", "all"), default=None,
                       help="BSD slice selection (default: nonempty, the dynamic one)")
    train.add_argument("--tile", type=int, default=None,
                       help=f"tile size in pixels, 0 = whole image (default: {d['tile']})")
    train.add_argument("--overlap", type=int, default=None, help=f"tile overlap in pixels (default: {d['overlap']})")
    train.add_argument("--views", type=int, default=None,
                       help=f"augmented views per image, incl. the original (default: {d['n_views']})")
    train.add_argument("--pixel-branch", type=int, default=None,
                       help=f"channels of the fusion block's full-resolution CNN branch, 0 = embedding-only fusion "
                       f"(default: {d['pixel_branch']})")
    train.add_argument("--no-fusion", action="store_true",
                       help="train the mask decoder alone; the fusion block stays the identity (ablation; "
                       "implies --pixel-branch 0)")
    train.add_argument("--no-augment", action="store_true", help="no flips/rotations/colour jitter (1 view)")
    train.add_argument("--box-jitter", type=float, default=None, help="box jitter, fraction of its side")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    train.add_argument("--no-amp", action="store_true", help="full fp32 (no fp16 autocast on CUDA, no bf16 autocast on CPUs that support it)")
    train.add_argument("--cache-dir", default=None, help="on-disk embedding cache folder (default: memory only)")
    train.add_argument("--resume", default=None, help="continue from a last.pt of an earlier run")
    train.add_argument("--overwrite", action="store_true",
                       help="replace an earlier run in --out (default: refuse; use --resume to continue it)")
    parser.set_defaults(func=run)
    return parser


def _config(args: argparse.Namespace, device: str):
    from napari_retsam.training.config import FinetuneConfig

    given = {
        "epochs": args.epochs, "max_steps": args.max_steps, "batch_size": args.batch_size,
        "accumulate": args.accumulate, "lr": args.lr, "weight_decay": args.weight_decay,
        "warmup_steps": args.warmup_steps, "loss": args.loss, "bce_weight": args.bce_weight,
        "selection": args.selection, "tile": args.tile, "overlap": args.overlap, "n_views": args.views,
        "pixel_branch": args.pixel_branch, "box_jitter": args.box_jitter,
    }
    values = {k: v for k, v in given.items() if v is not None}
    if args.no_fusion:
        values.update(fusion=False, pixel_branch=values.get("pixel_branch", 0))
    if args.no_augment:
        values.update(n_views=1, flips=False, rotations=False, brightness=0.0, contrast=0.0, saturation=0.0)
    return FinetuneConfig(
        model_type=args.model_type or "", checkpoint=args.checkpoint, full_finetune=args.full,
        val_fraction=0.0 if args.val_split else args.val_fraction, seed=args.seed, amp=not args.no_amp,
        device=device, cache_dir=args.cache_dir, **values,
    )


def _check_args(args: argparse.Namespace) -> None:
    """Ranges, input/output clashes and the cache folder, before any work (issue 12)."""
    from pathlib import Path

    from napari_retsam.cli._args import check_seed, warn_if_cache_dir_unwritable
    from napari_retsam.cli._files import check_not_input

    args.seed = check_seed(args.seed)
    out = Path(args.out)
    check_not_input([("--checkpoint", args.checkpoint)],
                    files=[("output", out / name) for name in ("last.pt", "best.pt", "metrics.jsonl")])
    if os.environ.get("RANK", "0") in ("", "0"):
        warn_if_cache_dir_unwritable(args.cache_dir)


def run(args: argparse.Namespace) -> int:
    from napari_retsam.errors import RetsamInputError
    from napari_retsam.sam.device import select_device
    from napari_retsam.training.runner import DataOptions, finetune

    if args.resume and not os.path.isfile(args.resume):
        raise RetsamInputError(f"--resume file {args.resume} does not exist")
    _check_args(args)
    if args.resume:  # every field of the resume file is checked before any work
        from napari_retsam.training.checkpoint import read_resume
        read_resume(args.resume)
    device = str(select_device(args.device))
    config = _config(args, device)
    options = DataOptions(
        dataset=args.dataset, root=args.root, split=args.split, limit=args.limit, annotator=args.annotator,
        val_split=args.val_split, synthetic=list(args.synthetic), synthetic_ratio=args.synthetic_ratio,
    )
    main_rank = os.environ.get("RANK", "0") in ("", "0")
    last = [0.0]

    def progress(done: int, total: int, message: str) -> None:
        now = time.monotonic()
        if main_rank and (now - last[0] >= 2.0 or (total and done >= total)):
            last[0] = now
            print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)

    def on_event(record: dict) -> None:
        if main_rank and record.get("kind") == "val":
            auc = record.get("auc")
            print(
                f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}"
                + (f", val AUC {auc:.4f}, F1 {record.get('f1', float('nan')):.4f}" if auc is not None else ""),
                file=sys.stderr, flush=True,
            )
        elif main_rank and record.get("kind") == "note":
            print(f"note: {record['message']}", file=sys.stderr, flush=True)

    from napari_retsam.cli._interrupt import stop_on_interrupt
    from napari_retsam.progress import Cancelled

    with stop_on_interrupt("fine-tuning") as should_stop:
        try:
            result = finetune(options, config, args.out, resume=args.resume, progress=progress,
                              on_event=on_event, should_stop=should_stop, overwrite=args.overwrite)
        except Cancelled as stop:  # last.pt was written first: say how to continue
            partial = stop.partial
            if main_rank:
                saved = partial is not None and partial.last_path.is_file()
                where = f"; continue with --resume {partial.last_path}" if saved else " (before any step: nothing saved)"
                print(f"retsam: {stop}{where}", file=sys.stderr)
            return 130
    if main_rank:
        print(f"{result.message}; wrote {result.last_path}, {result.best_path}, {result.log_path} "
              f"({result.steps_per_second:.2f} steps/s)")
    return 0
