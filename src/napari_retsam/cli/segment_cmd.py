"""``retsam segment``: box-prompted SAM vessel segmentation of one image or of a dataset.

::

    retsam segment --image IMG --out MASK.png [--box x0,y0,x1,y1 ...]
                   [--checkpoint FILE] [--finetuned FILE] [--model-type vit_b|vit_l|vit_h|tiny]
                   [--tile N|0] [--overlap N] [--device auto|cpu|cuda|mps]
                   [--prob-out PROB.npy|PROB.png] [--auto] [--json]
    retsam segment --dataset NAME --root DIR [--split test] --out-dir PRED_DIR [model and tiling flags]

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

Dataset mode (:mod:`napari_retsam.cli._dataset_mode`) loads the model once and
segments every sample of the split, each prompted by the bounding box of its
field of view (shipped, or computed where none ships: the protocol of
``retsam benchmark``), into ``PRED_DIR/<id>.npy`` and ``PRED_DIR/masks/<id>.png``
for ``retsam evaluate``; a process start and a model load per image are saved.

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
        help="SAM vessel segmentation of one image (or a dataset) from box prompts",
        description=(
            "Segment retinal vessels in one image with the Segment Anything Model prompted by boxes "
            "(default: the bounding box of the computed field of view), optionally tiled for thin "
            "vessels. Writes a 0/255 mask and optionally the probability map. Dataset mode "
            "(--dataset/--root/--out-dir) segments every image of a split with one model load."
        ),
        epilog=(
            "examples:\n"
            "  retsam segment --image 01_test.tif --out mask.png\n"
            "  retsam segment --dataset drive --root data/DRIVE --finetuned drive_ft.pt --out-dir preds/\n"
            "  retsam evaluate --dataset drive --root data/DRIVE --pred preds/\n"
            "  retsam segment --image 01_test.tif --box 40,30,520,560 --tile 512 --overlap 64 "
            "--out mask.png --prob-out prob.npy --json\n"
            "  retsam segment --image im0001.ppm --checkpoint sam_vit_b_01ec64.pth "
            "--finetuned drive_ft.pt --out mask.png\n"
            "  retsam segment --image 01_test.tif --tile 0 --device cuda --out mask.png"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from napari_retsam.cli._dataset_mode import add_dataset_arguments

    parser.add_argument("--image", help="input image (png, tif, jpg, gif, ppm, npy, ...)")
    parser.add_argument("--out", help="output mask, .png or .tif (0/255, or labels 1..L) (image mode)")
    add_dataset_arguments(parser)
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


def _load_model(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model of ``--checkpoint``/``--model-type``/``--finetuned`` on ``--device``, with ``--precision``."""
    from napari_retsam.sam.checkpoints import load_sam
    from napari_retsam.sam.device import select_device

    device = select_device(args.device)
    model = load_sam(args.checkpoint, model_type=args.model_type, device=device, finetuned=args.finetuned,
                     progress=_download_progress)
    model.encoder_precision = args.precision
    return model, device


def _segment(model: Any, segmenter: Any, args: argparse.Namespace, image: Any, boxes: Any) -> Any:
    """SAM (auto) of ``image``, or ``segmenter`` prompted by ``boxes`` with the command's tiling."""
    if args.auto:
        from napari_retsam.sam.auto import auto_segment

        return auto_segment(model, image)
    return segmenter.segment(image, boxes, tile=args.tile or None, overlap=args.overlap)


def _mask_image(result: Any) -> Any:
    """0/255 for a one-class model, else the class labels 1..L."""
    import numpy as np

    return result.mask.astype(np.uint8) * 255 if result.probs.shape[0] == 1 else result.labels


def _model_summary(model: Any, device: Any, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model_type": model.model_type,
        "checkpoint": model.source.get("checkpoint"),
        "finetuned": model.source.get("finetuned"),
        "num_classes": int(model.num_classes),
        "device": str(device),
        "mode": "auto" if args.auto else ("tiled" if args.tile else "whole-image"),
        "tile": int(args.tile),
        "overlap": int(args.overlap),
    }


def _run_dataset(args: argparse.Namespace) -> int:
    from napari_retsam.cli._dataset_mode import run_dataset

    def prepare() -> tuple[Any, dict[str, Any]]:
        from napari_retsam.sam.segmenter import Segmenter

        from napari_retsam.evaluation.benchmark import fov_box as benchmark_prompt  # the benchmark's own rule
        from napari_retsam.sam.embeddings import EmbeddingCache

        model, device = _load_model(args)
        # every image is new: keep one image's windows, not the default 1 GiB of embeddings
        segmenter = Segmenter(model, cache=EmbeddingCache(max_bytes=64 << 20))

        def predict(sample: Any) -> tuple[Any, Any, dict[str, Any]]:
            result = _segment(model, segmenter, args, sample.image, benchmark_prompt(sample.fov))
            return result.prob, _mask_image(result), {"seconds": round(float(result.timings.get("total_s", 0.0)), 3)}

        prompt = "none (automatic)" if args.auto else "one box per image: the bounding box of its FOV"
        return predict, {**_model_summary(model, device, args), "prompt": prompt}

    return run_dataset(args, prepare, inputs=[("--checkpoint", args.checkpoint), ("--finetuned", args.finetuned)])


def run(args: argparse.Namespace) -> int:
    from napari_retsam.cli._dataset_mode import check_mode
    from napari_retsam.cli._files import check_mask_outputs, write_mask, write_probability
    from napari_retsam.data import read_image
    from napari_retsam.errors import RetsamInputError
    from napari_retsam.options import check_tile

    mode = check_mode(args, image_only=("--box", "--prob-out"))
    check_tile(args.tile, args.overlap, names=("--tile", "--overlap"))
    for flag in ("checkpoint", "finetuned"):
        value = getattr(args, flag)
        if value and not Path(value).is_file():
            raise RetsamInputError(f"--{flag} file {value} does not exist")
    if mode == "dataset":
        return _run_dataset(args)

    out, prob_out = check_mask_outputs(args.out, args.prob_out)
    from napari_retsam.cli._files import check_not_input

    check_not_input([("image", args.image), ("--checkpoint", args.checkpoint), ("--finetuned", args.finetuned)],
                    files=[("mask output", out), ("probability output", prob_out)])

    image = read_image(args.image)
    boxes = [list(b) for b in args.box] if args.box else None
    model, device = _load_model(args)
    box_source = "none (automatic)"
    if not args.auto:
        if boxes is None:
            boxes = [fov_box(image)]
            box_source = "fov"
        else:
            box_source = "argument"
    from napari_retsam.sam.segmenter import Segmenter

    result = _segment(model, Segmenter(model), args, image, boxes)

    write_mask(out, _mask_image(result))
    if prob_out is not None:
        write_probability(prob_out, result.prob)

    vessel = int(result.mask.sum())
    summary = {
        "image": str(args.image),
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        **_model_summary(model, device, args),
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
