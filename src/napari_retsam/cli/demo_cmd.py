"""``retsam demo``: the whole method offline on synthetic fundus images (or a real dataset).

::

    retsam demo [--out DIR] [--dataset NAME --root DIR] [--smallest] [--size PX]
                [--n-train N] [--n-test N] [--gan-iterations N] [--gan-samples N]
                [--finetune-steps N] [--model-type T] [--checkpoint F] [--no-download]
                [--tile PX] [--device D] [--seed S] [--json]

See :mod:`napari_retsam.evaluation.demo` for the stages. Only the standard library is
imported at module level.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from napari_retsam.options import MODEL_TYPE_HELP, model_type_arg

__all__ = ["register", "run"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole method offline: synthetic data -> GAN -> SAM -> fine-tuning -> metrics",
        description=(
            "Run every stage of the method on procedural synthetic fundus images (no data or "
            "weights needed): a short GAN training and sampling, SAM with box prompts, a few "
            "decoder-only fine-tuning steps with the BSD loss on real + synthetic pairs, and a "
            "metrics table (PA, Se, Sp, AUC, F1) with the Frangi baseline beside it. Uses SAM "
            "vit_b when its checkpoint is cached or can be downloaded, otherwise a small "
            "randomly initialised SAM (said in one line)."
        ),
        epilog=(
            "examples:\n"
            "  retsam demo --out retsam-demo\n"
            "  retsam demo --out demo-drive --dataset drive --root DRIVE --n-train 4 --n-test 4\n"
            "  retsam demo --out quick --smallest"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="retsam-demo", help="output folder (default: retsam-demo)")
    parser.add_argument("--dataset", default=None, choices=("drive", "stare", "chase", "folder"),
                        help="run on a real dataset instead of synthetic images")
    parser.add_argument("--root", default=None, help="the dataset's folder (with --dataset)")
    parser.add_argument("--smallest", action="store_true",
                        help="the smallest settings that still run every stage (seconds; tiny random SAM)")
    parser.add_argument("--size", type=_positive, default=None, help="synthetic image side in px (default 256)")
    parser.add_argument("--n-train", type=int, default=None, help="training images (default 4; 0 = all)")
    parser.add_argument("--n-test", type=int, default=None, help="held-out images (default 2; 0 = all)")
    parser.add_argument("--gan-iterations", type=_positive, default=None, help="GAN generator updates (default 150)")
    parser.add_argument("--gan-samples", type=_positive, default=None, help="synthetic pairs to export (default 8)")
    parser.add_argument("--finetune-steps", type=_positive, default=None, help="fine-tuning steps (default 20)")
    parser.add_argument("--model-type", default=None, type=model_type_arg, help=MODEL_TYPE_HELP)
    parser.add_argument("--checkpoint", default=None, help="a local SAM checkpoint file")
    parser.add_argument("--no-download", action="store_true", help="never try to download SAM weights")
    parser.add_argument("--tile", type=int, default=None, help="SAM tile size in px (0 = whole image; default 0)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    parser.set_defaults(func=run)
    return parser


def _check_args(args: argparse.Namespace) -> None:
    """Ranges and input/output clashes before any work (issue 12)."""
    from napari_retsam.cli._args import MAX_SYNTHETIC_SIZE, check_range, check_seed
    from napari_retsam.cli._files import check_not_input

    args.seed = check_seed(args.seed)
    if args.size is not None:
        check_range(args.size, "--size", 64, MAX_SYNTHETIC_SIZE, "the largest fundus photographs are about 4000 px")
    out = Path(args.out)
    check_not_input([("--checkpoint", args.checkpoint), ("--root", args.root)],
                    files=[("output", out / name) for name in ("metrics.md", "metrics.csv", "protocol.json",
                                                               "overlay.png", "roc.png", "demo.json",
                                                               "sam_random_tiny.pt")],
                    folders=[("output folder", out / name) for name in ("gan", "gan_samples", "finetune",
                                                                        "embedding_cache")
                             + (() if args.dataset else ("data",))])


def run(args: argparse.Namespace) -> int:
    from napari_retsam.evaluation.demo import DemoOptions, run_demo
    from napari_retsam.errors import RetsamInputError

    if args.root and not args.dataset:
        raise RetsamInputError("--root needs --dataset (drive, stare, chase or folder)")
    _check_args(args)
    changes = {
        "size": args.size, "n_train": args.n_train, "n_test": args.n_test,
        "gan_iterations": args.gan_iterations, "gan_samples": args.gan_samples,
        "finetune_steps": args.finetune_steps, "model_type": args.model_type,
        "tile": args.tile, "device": args.device,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    for key in ("n_train", "n_test", "tile"):
        if key in changes and changes[key] < 0:
            raise RetsamInputError(f"--{key.replace('_', '-')} must be >= 0, got {changes[key]}")
    common = dict(dataset=args.dataset, root=Path(args.root) if args.root else None,
                  checkpoint=args.checkpoint, seed=args.seed)
    if args.no_download:
        common["download"] = False
    out = Path(args.out)
    options = (DemoOptions.smallest(out, **common, **changes) if args.smallest
               else DemoOptions(out=out, **common, **changes))

    def progress(done: int, total: int, message: str) -> None:
        print(f"[{done + 1}/{total}] {message}", flush=True)

    def say(message: str) -> None:
        print(f"note: {message}", flush=True)

    result = run_demo(options, progress=progress, say=say)
    table = result.table_markdown.read_text()
    if args.json:
        print(json.dumps({"out": str(result.out), "sam": result.sam_note, "seconds": result.seconds,
                          "table": str(result.table_markdown), "overlay": str(result.overlay_png),
                          "roc": str(result.roc_png)}, indent=2))
    else:
        print()
        print(table)
        print(f"written to {result.out}: metrics.md, metrics.csv, protocol.json, overlay.png, roc.png",
              file=sys.stdout)
    return 0
