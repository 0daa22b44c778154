"""``retsam evaluate``: compare predictions with a gold standard.

Two modes::

    retsam evaluate --dataset drive --root DIR [--split test] [--annotator 1] --pred PRED_DIR
                    [--threshold 0.5] [--per-image] [--json] [--sigmoid] [--whole-image]
    retsam evaluate --pred FILE --gold FILE [--fov FILE] [--gold-class K] [--threshold 0.5]
                    [--json] [--sigmoid]

``PRED_DIR`` holds ``<sample id>.npy`` (float probabilities, or logits with
``--sigmoid``) or ``<sample id>.png|.tif`` (8-bit: 0/255 binary masks or
probability x 255; see :mod:`napari_retsam.metrics.prediction_files`).
Metrics are FOV-masked by default and pooled over the set; ``--per-image`` adds
one row per image and the mean ± population std. ``--json`` prints one JSON
object whose top-level ``pa se sp precision f1 iou mcc auc tp fp tn fn
n_pixels`` are the pooled figures, plus ``protocol`` (and ``per_image``,
``mean``, ``std`` with ``--per-image``).

Only the standard library is imported at module level; the command (numpy,
Pillow and the project's pure core) never imports torch, napari or Qt.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

__all__ = ["register", "run"]

_TABLE_COLUMNS = {
    "pa": "PA", "se": "Se", "sp": "Sp", "precision": "Prec",
    "f1": "F1", "iou": "IoU", "mcc": "MCC", "auc": "AUC",
}


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="metrics of predictions against a dataset's gold standard or one gold file",
        description=(
            "Compute PA, Se, Sp, precision, F1, IoU, MCC and ROC AUC of predictions "
            "(probability maps or binary masks) against a gold standard, inside the FOV. "
            "Dataset mode: --dataset/--root/--pred DIR. Single image: --pred FILE --gold FILE."
        ),
        epilog=(
            "examples:\n"
            "  retsam evaluate --dataset drive --root data/DRIVE --pred preds/ --json\n"
            "  retsam evaluate --dataset stare --root data/STARE --annotator 2 --pred preds/ --per-image\n"
            "  retsam evaluate --pred prob.npy --gold 01_manual1.gif --fov 01_test_mask.gif"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pred", required=True, help="prediction folder (dataset mode) or file (single image)")
    parser.add_argument("--dataset", help="dataset kind: drive, stare, chase or folder")
    parser.add_argument("--root", help="dataset root folder (dataset mode)")
    parser.add_argument("--split", default="test", help="train, test or all (default: test)")
    parser.add_argument("--annotator", type=int, default=1, help="gold-standard annotator, 1 or 2 (default: 1)")
    parser.add_argument("--gold", help="gold-standard mask file (single-image mode)")
    parser.add_argument("--fov", help="field-of-view mask file (single-image mode; default: whole image)")
    parser.add_argument(
        "--gold-class", type=int, default=None, metavar="K",
        help="vessel class K of a multi-class gold label image (single-image mode)",
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="binarise as prob >= T (default: 0.5)")
    parser.add_argument("--per-image", action="store_true", help="also report every image and mean ± std")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--sigmoid", action="store_true", help="float predictions are logits: apply a sigmoid")
    parser.add_argument(
        "--whole-image", action="store_true",
        help="dataset mode: evaluate every pixel instead of the FOV only",
    )
    parser.set_defaults(func=run)
    return parser


def _check_mode(args: argparse.Namespace) -> str:
    from napari_retsam.errors import RetsamInputError

    if args.gold is not None:
        if args.dataset is not None or args.root is not None:
            raise RetsamInputError("use either --gold (one image) or --dataset/--root (a dataset), not both")
        if args.whole_image:
            raise RetsamInputError("--whole-image is for dataset mode; in single-image mode omit --fov")
        return "single"
    if args.dataset is None or args.root is None:
        raise RetsamInputError("give --dataset and --root (dataset mode) or --gold (single-image mode)")
    if args.fov is not None or args.gold_class is not None:
        raise RetsamInputError("--fov and --gold-class are for single-image mode (with --gold)")
    return "dataset"


def _check_sigmoid(raw: list[Any], decoded: list[Any], sigmoid: bool) -> None:
    import numpy as np

    from napari_retsam.errors import RetsamInputError

    if sigmoid and any(r.dtype == np.uint8 and d.dtype != np.bool_ for r, d in zip(raw, decoded)):
        raise RetsamInputError("--sigmoid applies to float logits (.npy or float TIFF), not to 8-bit images")


def _single(args: argparse.Namespace):  # -> SetReport
    from napari_retsam.metrics import evaluate_set
    from napari_retsam.metrics.prediction_files import (
        decode_prediction_set,
        read_label_file,
        read_prediction_file,
    )

    raw = [read_prediction_file(args.pred)]
    preds, note = decode_prediction_set(raw)
    _check_sigmoid(raw, preds, args.sigmoid)
    if args.gold_class is not None:
        gold = read_label_file(args.gold)
    else:
        from napari_retsam.data import read_binary_mask

        gold = read_binary_mask(args.gold)
    fovs = None
    if args.fov is not None:
        from napari_retsam.data import read_binary_mask

        fovs = [read_binary_mask(args.fov)]
    from pathlib import Path

    return evaluate_set(
        preds, [gold], fovs, args.threshold, gold_class=args.gold_class, sigmoid=args.sigmoid,
        ids=[Path(args.pred).stem], fov_note=note,
    )


def _dataset(args: argparse.Namespace):  # -> SetReport
    from napari_retsam.data import open_dataset
    from napari_retsam.errors import RetsamInputError
    from napari_retsam.metrics import evaluate_set
    from napari_retsam.metrics.prediction_files import (
        decode_prediction_set,
        find_prediction_files,
        read_prediction_file,
    )

    dataset = open_dataset(args.dataset, args.root, split=args.split, annotator=args.annotator)
    ids = list(dataset.ids)
    if not ids:
        raise RetsamInputError(f"dataset {args.dataset} at {args.root} has no samples in split {args.split}")
    files, unmatched = find_prediction_files(args.pred, ids)
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (", ..." if len(unmatched) > 5 else "")
        print(
            f"retsam: note: {len(unmatched)} file(s) in {args.pred} match no sample of "
            f"{args.dataset}/{args.split} and are ignored: {shown}",
            file=sys.stderr,
        )
    raw = [read_prediction_file(files[i]) for i in ids]
    preds, note = decode_prediction_set(raw)
    _check_sigmoid(raw, preds, args.sigmoid)
    golds, fovs, computed = [], [], []
    for sample in dataset:
        if sample.gold is None:
            raise RetsamInputError(f"sample {sample.id} of {args.dataset} has no gold standard to compare with")
        golds.append(sample.gold)
        fovs.append(sample.fov)
        if sample.fov_computed:
            computed.append(sample.id)
    notes = [note] if note else []
    if computed and not args.whole_image:
        notes.append(f"FOV computed from the image for {len(computed)} of {len(ids)} samples")
    return evaluate_set(
        preds, golds, None if args.whole_image else fovs, args.threshold, sigmoid=args.sigmoid,
        ids=ids, annotator=args.annotator, dataset=args.dataset, split=args.split,
        fov_note="; ".join(notes),
    )


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}"


def _print_table(result: dict[str, Any], protocol_line: str, per_image: bool) -> None:
    print(f"protocol: {protocol_line}")
    header = f"{'':<14}" + "".join(f"{label:>9}" for label in _TABLE_COLUMNS.values())
    print(header)
    if per_image:
        for row in result["per_image"]:
            print(f"{row['id'][:14]:<14}" + "".join(f"{_fmt(row[c]):>9}" for c in _TABLE_COLUMNS))
        print(f"{'mean':<14}" + "".join(f"{_fmt(result['mean'][c]):>9}" for c in _TABLE_COLUMNS))
        print(f"{'std':<14}" + "".join(f"{_fmt(result['std'][c]):>9}" for c in _TABLE_COLUMNS))
    print(f"{'pooled':<14}" + "".join(f"{_fmt(result[c]):>9}" for c in _TABLE_COLUMNS))
    print(
        f"counts: TP {result['tp']}  FP {result['fp']}  TN {result['tn']}  FN {result['fn']}  "
        f"pixels {result['n_pixels']}"
    )
    if result["auc"] is None:
        print(f"AUC n/a: {result['auc_note']}")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print a table or one JSON object; returns 0."""
    from dataclasses import replace

    from napari_retsam.metrics.validation import check_threshold

    mode = _check_mode(args)
    args.threshold = check_threshold(args.threshold)
    report = _single(args) if mode == "single" else _dataset(args)
    if mode == "single":
        aggregation = "single image"
    else:
        aggregation = "pooled + per-image (mean ± population std)" if args.per_image else "pooled"
    protocol = replace(report.protocol, aggregation=aggregation)
    full = report.as_dict()
    result: dict[str, Any] = dict(full["pooled"])
    result["protocol"] = protocol.as_dict()
    if args.per_image:
        result["per_image"] = full["per_image"]
        result["mean"] = full["mean"]
        result["std"] = full["std"]
        result["n_defined"] = full["n_defined"]
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        _print_table(result, protocol.describe(), args.per_image)
    return 0
