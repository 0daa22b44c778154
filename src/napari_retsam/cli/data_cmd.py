"""``retsam data``: inspect the retinal vessel datasets.

::

    retsam data info --dataset drive|stare|chase|folder --root DIR
                     [--split train|test|all] [--annotator 1|2] [--json]

``info`` decodes every sample of the split and counts, per image and in total,
the pixels inside the field of view (``fov_pixels``) and the gold-standard
vessel pixels inside it (``vessel_pixels``); ``vessel_fraction =
vessel_pixels / fov_pixels``. With ``--json`` it prints one JSON object::

    {"dataset", "root", "split", "annotator", "n_samples", "ids",
     "image_size" ([H, W] or null when sizes differ), "image_sizes",
     "fov_pixels", "vessel_pixels" (null without gold standard),
     "vessel_fraction", "fov_computed" (number of samples whose FOV was computed),
     "has_gold", "per_sample": [{"id", "height", "width", "fov_pixels",
     "vessel_pixels", "vessel_fraction", "fov_computed"}, ...]}

Only the standard library is imported at module level; the command itself
needs numpy, Pillow and SciPy, never torch, napari or Qt. Bad input (unknown
dataset, missing or unmatched files, unreadable images) exits with code 2 and
one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register", "run", "dataset_info"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``retsam data`` (with its ``info`` action) to the ``retsam`` parser."""
    parser = subparsers.add_parser(
        "data",
        help="inspect DRIVE, STARE, CHASE_DB1 or a generic dataset folder",
        description="Inspect retinal vessel datasets in their published layouts.",
    )
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION")
    actions.required = True
    info = actions.add_parser(
        "info",
        help="number of samples, FOV pixels and vessel pixels of a split",
        description=(
            "Count samples, field-of-view pixels and gold-standard vessel pixels inside the FOV "
            "of one split of a dataset (FOV computed from the image where none ships)."
        ),
        epilog=(
            "examples:\n"
            "  retsam data info --dataset drive --root data/DRIVE --split test --json\n"
            "  retsam data info --dataset stare --root data/STARE --split all --annotator 2\n"
            "  retsam data info --dataset folder --root my_images"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("--dataset", help="drive, stare, chase or folder")
    info.add_argument("--root", help="the dataset's folder")
    info.add_argument("--split", default="test", help="train, test or all (default: test)")
    info.add_argument("--annotator", default="1", help="gold-standard annotator, 1 or 2 (default: 1)")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    info.set_defaults(func=run)
    return info


def dataset_info(name: str, root: str, split: str = "test", annotator: int = 1) -> dict[str, Any]:
    """The figures ``retsam data info`` prints, as a JSON-safe dict (see the module docstring)."""
    from napari_retsam.data import open_dataset

    ds = open_dataset(name, root, split=split, annotator=annotator)
    per_sample: list[dict[str, Any]] = []
    fov_total = 0
    vessel_total = 0
    has_gold = True
    for sample in ds:
        fov_px = int(sample.fov.sum())
        vessel_px = int((sample.gold & sample.fov).sum()) if sample.gold is not None else None
        if vessel_px is None:
            has_gold = False
        else:
            vessel_total += vessel_px
        fov_total += fov_px
        h, w = sample.shape
        per_sample.append(
            {
                "id": sample.id,
                "height": h,
                "width": w,
                "fov_pixels": fov_px,
                "vessel_pixels": vessel_px,
                "vessel_fraction": (vessel_px / fov_px) if vessel_px is not None else None,
                "fov_computed": bool(sample.fov_computed),
            }
        )
    sizes = sorted({(p["height"], p["width"]) for p in per_sample})
    vessels = vessel_total if has_gold else None
    return {
        "dataset": ds.name,
        "root": str(ds.root),
        "split": ds.split,
        "annotator": ds.annotator,
        "n_samples": len(per_sample),
        "ids": list(ds.ids),
        "image_size": list(sizes[0]) if len(sizes) == 1 else None,
        "image_sizes": [list(s) for s in sizes],
        "fov_pixels": fov_total,
        "vessel_pixels": vessels,
        "vessel_fraction": (vessels / fov_total) if vessels is not None and fov_total else None,
        "fov_computed": sum(p["fov_computed"] for p in per_sample),
        "has_gold": has_gold,
        "per_sample": per_sample,
    }


def _format_table(info: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:6.2f}%"

    def num(x: int | None) -> str:
        return "n/a" if x is None else f"{x:,}"

    lines = [
        f"{info['dataset']} ({info['root']}), split {info['split']}, annotator {info['annotator']}: "
        f"{info['n_samples']} samples"
        + (f", {info['image_size'][0]}×{info['image_size'][1]} px" if info["image_size"] else ""),
        f"{'id':<16} {'H×W':>10} {'FOV px':>12} {'vessel px':>12} {'vessel %':>9}  FOV",
    ]
    for p in info["per_sample"]:
        lines.append(
            f"{p['id']:<16} {str(p['height']) + '×' + str(p['width']):>10} {num(p['fov_pixels']):>12} "
            f"{num(p['vessel_pixels']):>12} {pct(p['vessel_fraction']):>9}  "
            f"{'computed' if p['fov_computed'] else 'shipped'}"
        )
    lines.append(
        f"{'total':<16} {'':>10} {num(info['fov_pixels']):>12} {num(info['vessel_pixels']):>12} "
        f"{pct(info['vessel_fraction']):>9}"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``retsam data info``; returns the exit code (errors raise RetsamInputError)."""
    from napari_retsam.data import DATASETS, SPLITS
    from napari_retsam.data.layouts import canonical_name
    from napari_retsam.errors import RetsamInputError

    if not args.dataset:
        raise RetsamInputError(f"data info needs --dataset ({', '.join(DATASETS)})")
    if not args.root:
        raise RetsamInputError("data info needs --root DIR (the dataset's folder)")
    name = canonical_name(args.dataset)
    if str(args.split).lower() not in SPLITS:
        raise RetsamInputError(f"unknown split {args.split!r}; choose one of {', '.join(SPLITS)}")
    if str(args.annotator) not in ("1", "2"):
        raise RetsamInputError(f"--annotator must be 1 or 2, got {args.annotator!r}")
    info = dataset_info(name, args.root, str(args.split).lower(), int(args.annotator))
    if args.json:
        sys.stdout.write(json.dumps(info) + "\n")
    else:
        sys.stdout.write(_format_table(info) + "\n")
    return 0
