"""``retsam segment``: box-prompted SAM vessel segmentation of one image.

::

    retsam segment --image IMG --out MASK.png [--box x0,y0,x1,y1 ...]
                   [--checkpoint FILE] [--finetuned FILE] [--model-type vit_b|vit_l|vit_h|tiny]
                   [--tile N|0] [--overlap N] [--device auto|cpu|cuda|mps]
                   [--prob-out PROB.npy|PROB.png] [--auto] [--json]

Boxes are pixel coordinates of the image (x = column, y = row); corners in any
order; boxes partly outside are clipped, boxes wholly outside or of zero area are
refused. Without ``--box`` the bounding box of the field of view computed from
the image (:func:`napari_retsam.data.compute_fov`) is used. ``--tile 0`` is
whole-image mode (one encoder pass). Without ``--checkpoint`` the official file
of ``--model-type`` is taken from the cache (downloaded on first use).
``--finetuned`` applies a napari-retsam fine-tuned checkpoint on top of the base.
``--auto`` runs SAM's automatic mask generator instead of box prompts. The mask
is written as 8-bit PNG/TIFF (0/255; for a multi-class model the class labels
1..L), ``--prob-out`` as ``.npy`` float32 or 8-bit ``round(255·p)``.

Only the standard library is imported at module level.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from napari_retsam.options import (
    DEFAULT_OVERLAP,
    DEFAULT_PRECISION,
    DEFAULT_TILE,
    MODEL_TYPE_HELP,
    PRECISIONS,
    model_type_arg,
)

__all__ = ["parse_box", "register", "run"]

def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` -> four floats (argparse type; bad text -> usage error)."""
    parts = [p for p in text.replace(" ", "").split(",") if p != ""]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"a box is x0,y0,x1,y1 (four numbers), got {text!r}")
    return values  # type: ignore[return-value]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="SAM vessel segmentation of one image from box prompts",
        description=(
            "Segment retinal vessels in one image with the Segment Anything Model prompted by boxes "
            "(default: the bounding box of the computed field of view), optionally tiled for thin "
            "vessels. Writes a 0/255 mask and optionally the probability map."
        ),
        epilog=(
            "examples:\n"
            "  retsam segment --image 01_test.tif --out mask.png\n"
            "  retsam segment --image 01_test.tif --box 40,30,520,560 --tile 512 --overlap 64 "
            "--out mask.png --prob-out prob.npy --json\n"
            "  retsam segment --image im0001.ppm --checkpoint sam_vit_b_01ec64.pth "
            "--finetuned drive_ft.pt --out mask.png\n"
            "  retsam segment --image 01_test.tif --tile 0 --device cuda --out mask.png"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", required=True, help="input image (png, tif, jpg, gif, ppm, npy, ...)")
    parser.add_argument("--out", required=True, help="output mask, .png or .tif (0/255, or labels 1..L)")
    parser.add_argument("--box", action="append", type=parse_box, default=None, metavar="x0,y0,x1,y1",
                        help="a box prompt in image pixels; repeat for several; write --box=-5,0,90,80 when x0 is negative "
                        "(default: FOV bounding box)")
    parser.add_argument("--checkpoint", default=None,
                        help="SAM checkpoint file (official .pth or napari-retsam checkpoint); "
                        "default: the cached official file, downloaded on first use")
    parser.add_argument("--finetuned", default=None, help="napari-retsam fine-tuned checkpoint on top of the base")
    parser.add_argument("--model-type", default=None, type=model_type_arg, help=MODEL_TYPE_HELP)
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE,
                        help=f"tile size in pixels for tiled prompting, 0 = whole image (default {DEFAULT_TILE})")
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                        help=f"tile overlap in pixels (default {DEFAULT_OVERLAP})")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                        help=f"encoder precision: fp32 (exact), bf16 (faster where the CPU/GPU has bfloat16), "
                        f"auto (bf16 only on CPUs with native bf16) (default: {DEFAULT_PRECISION})")
    parser.add_argument("--prob-out", default=None,
                        help="also write the probability map: .npy (float32) or .png/.tif (8-bit, p x 255)")
    parser.add_argument("--auto", action="store_true",
                        help="SAM (auto): automatic mask generator, no prompts (boxes are ignored)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=run)
    return parser


def fov_box(image: Any) -> list[float]:
    """Bounding box ``[x0, y0, x1, y1]`` of the FOV computed from ``image``."""
    from napari_retsam.data import compute_fov, mask_bounding_box
    from napari_retsam.errors import RetsamInputError

    box = mask_bounding_box(compute_fov(image))
    if box is None or box[2] == box[0] or box[3] == box[1]:
        raise RetsamInputError("no field of view found in the image; pass --box x0,y0,x1,y1")
    return [float(v) for v in box]


def _download_progress(done: int, total: int, message: str) -> None:
    """Text progress bar on stderr for checkpoint downloads."""
    import sys

    mib = 1 << 20
    if total > 0 and total != done:
        width = 30
        filled = int(width * done / total)
        line = f"\r{message}: [{'#' * filled}{'.' * (width - filled)}] {done / mib:.1f}/{total / mib:.1f} MiB"
    else:
        line = f"\r{message}: {done / mib:.1f} MiB"
    sys.stderr.write(line + ("\n" if total and done >= total else ""))
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_retsam.cli._files import check_mask_outputs, write_mask, write_probability
    from napari_retsam.data import read_image
    from napari_retsam.errors import RetsamInputError

    out, prob_out = check_mask_outputs(args.out, args.prob_out)
    from napari_retsam.cli._files import check_not_input

    check_not_input([("image", args.image), ("--checkpoint", args.checkpoint), ("--finetuned", args.finetuned)],
                    files=[("mask output", out), ("probability output", prob_out)])
    from napari_retsam.options import check_tile

    check_tile(args.tile, args.overlap, names=("--tile", "--overlap"))
    for flag in ("checkpoint", "finetuned"):
        value = getattr(args, flag)
        if value and not Path(value).is_file():
            raise RetsamInputError(f"--{flag} file {value} does not exist")

    image = read_image(args.image)
    boxes = [list(b) for b in args.box] if args.box else None

    from napari_retsam.sam.checkpoints import load_sam
    from napari_retsam.sam.device import select_device

    device = select_device(args.device)
    model = load_sam(args.checkpoint, model_type=args.model_type, device=device, finetuned=args.finetuned,
                     progress=_download_progress)
    model.encoder_precision = args.precision
    if args.auto:
        from napari_retsam.sam.auto import auto_segment

        result = auto_segment(model, image)
        box_source = "none (automatic)"
    else:
        from napari_retsam.sam.segmenter import Segmenter

        if boxes is None:
            boxes = [fov_box(image)]
            box_source = "fov"
        else:
            box_source = "argument"
        result = Segmenter(model).segment(image, boxes, tile=args.tile or None, overlap=args.overlap)

    if result.probs.shape[0] == 1:
        mask_image = result.mask.astype(np.uint8) * 255
    else:
        mask_image = result.labels
    write_mask(out, mask_image)
    if prob_out is not None:
        write_probability(prob_out, result.prob)

    vessel = int(result.mask.sum())
    summary = {
        "image": str(args.image),
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "model_type": model.model_type,
        "checkpoint": model.source.get("checkpoint"),
        "finetuned": model.source.get("finetuned"),
        "num_classes": int(model.num_classes),
        "device": str(device),
        "mode": "auto" if args.auto else ("tiled" if args.tile else "whole-image"),
        "tile": int(args.tile),
        "overlap": int(args.overlap),
        "boxes": [[float(v) for v in b] for b in result.boxes],
        "box_source": box_source,
        "tiles": len(result.tiles),
        "vessel_pixels": vessel,
        "vessel_fraction": vessel / float(image.shape[0] * image.shape[1]),
        "seconds": round(float(result.timings.get("total_s", 0.0)), 3),
        "out": str(out),
        "prob_out": str(prob_out) if prob_out else None,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{out}: {vessel} vessel pixels ({100 * summary['vessel_fraction']:.2f}% of the image), "
            f"{model.model_type}, {summary['mode']}, {len(result.boxes)} box(es), {summary['seconds']} s"
            + (f"; probability map in {prob_out}" if prob_out else "")
        )
    return 0
