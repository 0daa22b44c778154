"""``retsam baseline``: Frangi vesselness segmentation of one image or of a dataset.

::

    retsam baseline --image IMG --out MASK.png [--prob-out PROB.npy|PROB.png]
                    [--fov FOV.png] [--threshold T] [--json]
    retsam baseline --dataset NAME --root DIR [--split test] --out-dir PRED_DIR
                    [--threshold T] [--json]

Reads an image (any format :func:`napari_retsam.data.read_image` reads), takes
the FOV from ``--fov`` or computes it from the image
(:func:`napari_retsam.data.compute_fov`), runs
:func:`napari_retsam.baseline.frangi_segment` and writes the binary mask as an
8-bit PNG/TIFF (0 background, 255 vessel). ``--prob-out`` also writes the
probability map: ``.npy`` float32 in ``[0, 1]``, or ``.png``/``.tif`` 8-bit
``round(255 * p)`` (the encoding ``retsam evaluate`` decodes). Files are written
atomically. ``--json`` prints one JSON summary object.

Dataset mode runs every sample of a dataset split (its shipped or computed FOV)
and writes ``PRED_DIR/<id>.npy`` (probability, float32) and
``PRED_DIR/masks/<id>.png`` (0/255), so that
``retsam evaluate --dataset NAME --root DIR --pred PRED_DIR`` scores it.

Only the standard library is imported at module level (never torch, napari, Qt).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from napari_retsam.cli._dataset_mode import add_dataset_arguments

    parser = subparsers.add_parser(
        "baseline",
        help="Frangi vesselness baseline: probability map and vessel mask of one image",
        description=(
            "Segment the vessels of one fundus image with the classical multi-scale Frangi "
            "vesselness filter on the green channel (parameters tuned on DRIVE training). "
            "Writes a 0/255 mask and optionally the probability map."
        ),
        epilog=(
            "examples:\n"
            "  retsam baseline --image 01_test.tif --out 01_test.png\n"
            "  retsam baseline --image 01_test.tif --fov 01_test_mask.gif --out mask.png "
            "--prob-out prob.npy --json\n"
            "  retsam baseline --image im0001.ppm --out mask.png --threshold 0.4\n"
            "  retsam baseline --dataset drive --root data/DRIVE --split test --out-dir frangi/\n"
            "  retsam evaluate --dataset drive --root data/DRIVE --pred frangi/"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", help="input fundus image (png, tif, jpg, gif, ppm, npy, ...)")
    parser.add_argument("--out", help="output vessel mask, .png or .tif (0/255) (image mode)")
    add_dataset_arguments(parser)
    parser.add_argument("--prob-out", default=None,
                        help="also write the probability map: .npy (float32) or .png/.tif (8-bit, p x 255)")
    parser.add_argument("--fov", default=None, help="field-of-view mask file (default: computed from the image)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="vessel if prob >= T (default: the DRIVE-training choice, 0.5)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=run)
    return parser


def _run_dataset(args: argparse.Namespace, threshold: float) -> int:
    import numpy as np

    from napari_retsam.baseline import frangi_segment
    from napari_retsam.cli._dataset_mode import run_dataset

    def predict(sample: Any) -> tuple[Any, Any, dict[str, Any]]:
        prob, mask = frangi_segment(sample.image, sample.fov, threshold=threshold)
        return prob, mask.astype(np.uint8) * 255, {}

    return run_dataset(args, lambda: (predict, {"threshold": float(threshold), "params": _params_dict()}))


def _params_dict() -> dict[str, Any]:
    from napari_retsam.baseline import DEFAULT_PARAMS

    return {
        "sigmas": list(DEFAULT_PARAMS.sigmas),
        "beta": DEFAULT_PARAMS.beta,
        "gamma": DEFAULT_PARAMS.gamma,
        "clahe": DEFAULT_PARAMS.clahe,
        "norm_percentile": DEFAULT_PARAMS.norm_percentile,
        "exponent": DEFAULT_PARAMS.exponent,
    }


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_retsam.baseline import DEFAULT_THRESHOLD, frangi_segment
    from napari_retsam.cli._files import check_mask_outputs, write_mask, write_probability
    from napari_retsam.data import compute_fov, read_binary_mask, read_image
    from napari_retsam.errors import RetsamInputError

    from napari_retsam.cli._dataset_mode import check_mode

    mode = check_mode(args, image_only=("--prob-out", "--fov"))
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    if not 0.0 <= threshold <= 1.0:
        raise RetsamInputError(f"--threshold must be in [0, 1], got {threshold}")
    if mode == "dataset":
        return _run_dataset(args, threshold)
    out, prob_out = check_mask_outputs(args.out, args.prob_out)
    from napari_retsam.cli._files import check_not_input

    check_not_input([("image", args.image), ("FOV mask", args.fov)],
                    files=[("mask output", out), ("probability output", prob_out)])

    image = read_image(args.image)
    if args.fov is not None:
        fov = read_binary_mask(args.fov)
        if fov.shape != image.shape[:2]:
            raise RetsamInputError(
                f"FOV mask {args.fov} is {fov.shape[1]}x{fov.shape[0]} but the image is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        fov_computed = False
    else:
        fov = compute_fov(image)
        fov_computed = True
    prob, mask = frangi_segment(image, fov, threshold=threshold)

    write_mask(out, mask.astype(np.uint8) * 255)
    if prob_out is not None:
        write_probability(prob_out, prob)

    fov_pixels = int(fov.sum())
    vessel_pixels = int(mask.sum())
    summary = {
        "image": str(args.image),
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "fov": str(args.fov) if args.fov else None,
        "fov_computed": fov_computed,
        "fov_pixels": fov_pixels,
        "threshold": float(threshold),
        "vessel_pixels": vessel_pixels,
        "vessel_fraction": vessel_pixels / fov_pixels if fov_pixels else 0.0,
        "out": str(out),
        "prob_out": str(prob_out) if prob_out else None,
        "params": _params_dict(),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{out}: {vessel_pixels} vessel pixels ({100 * summary['vessel_fraction']:.2f}% of the "
            f"{'computed' if fov_computed else 'given'} FOV) at threshold {threshold:g}"
            + (f"; probability map in {prob_out}" if prob_out else "")
        )
    return 0
