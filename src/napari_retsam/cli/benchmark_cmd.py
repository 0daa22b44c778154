"""``retsam benchmark``: the method's comparison table on a dataset's test split.

::

    retsam benchmark --dataset drive|stare|chase|folder --root DIR --out DIR
                     [--split S] [--annotator A] [--limit N]
                     [--checkpoint F --model-type T] [--finetuned F] [--gan F]
                     [--tile PX] [--overlap PX] [--threshold T] [--device D]
                     [--download] [--skip-auto] [--auto-points N]

Rows and protocol: :mod:`napari_retsam.evaluation.benchmark`. Writes ``table.md``,
``table.csv`` and ``protocol.json`` into ``--out``. Only the standard library is
imported at module level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from napari_retsam.options import DEFAULT_OVERLAP, DEFAULT_TILE, MODEL_TYPE_HELP, model_type_arg

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "benchmark",
        help="the method's comparison table (Frangi, SAM auto, SAM box, fine-tuned, + fusion, + GAN)",
        description=(
            "Evaluate on a dataset's test split every row of the method's comparison table that "
            "can run: Frangi baseline, SAM automatic mode, SAM zero-shot with box prompts (default "
            "model: the bundled LiteMedSAM), SAM fine-tuned with the BSD loss (--finetuned), with the "
            "fusion block's pixel branch (--fusion, the recipe of retsam finetune) and with GAN "
            "augmentation (--gan). Columns PA, Se, Sp, AUC, F1 (FOV-masked, pooled, with per-image "
            "mean ± std), plus an ROC figure. Rows whose model was not named are listed as skipped "
            "with the reason; a named file that does not load fails the command."
        ),
        epilog=(
            "examples:\n"
            "  retsam benchmark --dataset drive --root DRIVE --out bench-drive --fusion runs/drive/best.pt\n"
            "  retsam benchmark --dataset drive --root DRIVE --out bench --checkpoint sam_vit_b_01ec64.pth \\\n"
            "      --finetuned runs/bsd/best.pt --gan runs/bsd-gan/best.pt --tile 512"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", required=True, choices=("drive", "stare", "chase", "folder"))
    parser.add_argument("--root", required=True, help="the dataset's folder")
    parser.add_argument("--out", required=True, help="output folder for table.md, table.csv, protocol.json")
    parser.add_argument("--split", default="test", choices=("train", "test", "all"), help="default: test")
    parser.add_argument("--annotator", type=int, default=1, choices=(1, 2), help="gold standard (default 1)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    parser.add_argument("--checkpoint", default=None, help="base SAM checkpoint (default: the cached official file)")
    parser.add_argument("--model-type", default=None, type=model_type_arg, help=MODEL_TYPE_HELP)
    parser.add_argument("--finetuned", default=None, help="project checkpoint fine-tuned with the BSD loss")
    parser.add_argument("--fusion", default=None,
                        help="project checkpoint fine-tuned with the BSD loss and the fusion block's pixel branch")
    parser.add_argument("--gan", default=None,
                        help="project checkpoint fine-tuned with the BSD loss on real + GAN-synthetic pairs")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE,
                        help=f"SAM tile size in px (0 = whole image; default {DEFAULT_TILE})")
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help=f"tile overlap in px (default {DEFAULT_OVERLAP})")
    parser.add_argument("--cache-dir", default=None, help="on-disk embedding cache shared between runs")
    parser.add_argument("--threshold", type=float, default=0.5, help="vessel if prob >= T (default 0.5)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--download", action="store_true", help="download the official SAM weights if missing")
    parser.add_argument("--skip-auto", action="store_true", help="skip the (slow) SAM automatic-mode row")
    parser.add_argument("--auto-points", type=int, default=16, help="automatic mode: points per side (default 16)")
    parser.set_defaults(func=run)
    return parser


def _check_before_rows(args: argparse.Namespace) -> None:
    """Every SAM option and the output files, before the (slow) Frangi row runs."""
    from napari_retsam.cli._args import check_range
    from napari_retsam.cli._files import check_not_input

    from napari_retsam.options import check_tile

    check_tile(args.tile, args.overlap, names=("--tile", "--overlap"))
    check_range(args.auto_points, "--auto-points", 1, 256, "256² point prompts per image already take hours")
    out = Path(args.out)
    check_not_input([("--checkpoint", args.checkpoint), ("--finetuned", args.finetuned), ("--fusion", args.fusion),
                     ("--gan", args.gan)],
                    files=[("output", out / name) for name in ("table.md", "table.csv", "protocol.json", "roc.png")])


def run(args: argparse.Namespace) -> int:
    from napari_retsam.errors import RetsamInputError
    from napari_retsam.evaluation.benchmark import BenchmarkOptions, run_benchmark

    if args.limit < 0:
        raise RetsamInputError(f"--limit must be >= 0, got {args.limit}")
    if not 0.0 <= args.threshold <= 1.0:
        raise RetsamInputError(f"--threshold must be in [0, 1], got {args.threshold}")
    for flag, path in (("--checkpoint", args.checkpoint), ("--finetuned", args.finetuned), ("--fusion", args.fusion),
                       ("--gan", args.gan)):
        if path and not Path(path).is_file():
            raise RetsamInputError(f"{flag} file {path} does not exist")
    _check_before_rows(args)
    options = BenchmarkOptions(
        dataset=args.dataset, root=Path(args.root), out=Path(args.out), split=args.split,
        annotator=args.annotator, limit=args.limit, checkpoint=args.checkpoint,
        model_type=args.model_type, finetuned=args.finetuned, fusion=args.fusion, gan=args.gan, tile=args.tile,
        cache_dir=args.cache_dir,
        overlap=args.overlap, threshold=args.threshold, device=args.device,
        download=args.download, auto_points=args.auto_points, skip_auto=args.skip_auto,
    )
    last = [-1]

    def progress(done: int, total: int, message: str) -> None:
        if done != last[0]:
            print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)
            last[0] = done

    table = run_benchmark(options, progress=progress)
    print(table.to_markdown())
    print(f"written to {options.out}: table.md, table.csv, protocol.json, roc.png")
    return 0
