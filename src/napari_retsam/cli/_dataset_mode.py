"""Dataset mode of the commands that segment (``retsam baseline``, ``retsam segment``).

One image (``--image`` / ``--out``) or every sample of a dataset split
(``--dataset`` / ``--root`` / ``--split`` / ``--out-dir``): :func:`check_mode`
holds the rule for which flags go together, :func:`run_dataset` the loop. A
dataset run writes ``OUT_DIR/<id>.npy`` (probability, float32) and
``OUT_DIR/masks/<id>.png`` (0/255, or class labels), atomically, so that
``retsam evaluate --dataset NAME --root DIR --split SPLIT --pred OUT_DIR``
scores it; no output may land on an input, and an earlier run's predictions
are replaced only with ``--overwrite`` (both checked before any work).

Only the standard library is imported at module level.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_dataset_arguments", "check_mode", "run_dataset"]


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dataset``, ``--root``, ``--split`` (default test) and ``--out-dir``."""
    parser.add_argument("--dataset", help="dataset mode: drive, stare, chase or folder")
    parser.add_argument("--root", help="dataset root folder (dataset mode)")
    parser.add_argument("--split", default="test", help="train, test or all (dataset mode, default: test)")
    parser.add_argument("--out-dir", help="dataset mode: folder for <id>.npy probabilities and masks/<id>.png")
    parser.add_argument("--overwrite", action="store_true",
                        help="dataset mode: replace the predictions an earlier run left in --out-dir")


def check_mode(args: argparse.Namespace, image_only: tuple[str, ...]) -> str:
    """``"image"`` or ``"dataset"`` from the flags given; a mixed or incomplete set is one clear error.

    ``image_only``: the other flags (``--prob-out``, ...) that only image mode takes.
    """
    from napari_retsam.errors import RetsamInputError

    if args.image is not None:
        if args.dataset is not None or args.root is not None or args.out_dir is not None:
            raise RetsamInputError("use either --image/--out (one image) or --dataset/--root/--out-dir, not both")
        if args.out is None:
            raise RetsamInputError("--out (the output mask file) is required with --image")
        if args.overwrite:
            raise RetsamInputError("--overwrite is for dataset mode (with --out-dir)")
        return "image"
    if args.dataset is None or args.root is None or args.out_dir is None:
        raise RetsamInputError("give --image and --out (one image) or --dataset, --root and --out-dir (a dataset)")
    given = ["--out"] if args.out is not None else []
    given += [flag for flag in image_only if getattr(args, flag.lstrip("-").replace("-", "_")) not in (None, False)]
    if given:
        listed = ", ".join(["--out", *image_only])
        raise RetsamInputError(f"{listed} are for image mode (with --image); got {', '.join(given)}")
    return "dataset"


Predict = Callable[[Any], tuple[Any, Any, dict[str, Any]]]


def run_dataset(
    args: argparse.Namespace,
    prepare: Callable[[], tuple[Predict, dict[str, Any]]],
    inputs: list[tuple[str, Any]] | None = None,
) -> int:
    """Run a command's ``predict`` on every sample of ``--dataset``/``--root``/``--split``.

    ``prepare()`` is called once the dataset is open and the outputs are checked (so a
    bad folder costs no model load) and returns ``(predict, summary)``:
    ``predict(sample) -> (prob H×W, mask image H×W uint8, extra row fields)``, and the
    fields added to the ``--json`` summary (the command's settings). ``inputs``: further
    input files (checkpoints, ...) no output may overwrite. Prints a line per sample
    (or one JSON object with ``--json``) and returns 0.
    """
    import numpy as np

    from napari_retsam.cli._files import check_not_input, dataset_files, encode_array
    from napari_retsam.data import open_dataset
    from napari_retsam.errors import RetsamInputError
    from napari_retsam.io_utils import atomic_write_bytes, ensure_writable_dir

    dataset = open_dataset(args.dataset, args.root, split=args.split)
    planned = Path(args.out_dir)
    check_not_input([*dataset_files(dataset), *(inputs or [])],
                    files=[(out_label, path) for sid in dataset.ids for out_label, path in (
                        ("probability output", planned / f"{sid}.npy"), ("mask output", planned / "masks" / f"{sid}.png"))],
                    into=[("--out-dir", planned), ("mask folder", planned / "masks")])
    earlier = [path for sid in dataset.ids for path in (planned / f"{sid}.npy", planned / "masks" / f"{sid}.png")
               if path.exists()]
    if earlier and not args.overwrite:
        raise RetsamInputError(
            f"--out-dir {planned} already holds predictions of an earlier run ({earlier[0].name} and "
            f"{len(earlier) - 1} more); choose another folder or pass --overwrite to replace them"
        )
    out_dir = ensure_writable_dir(args.out_dir)
    mask_dir = ensure_writable_dir(out_dir / "masks")
    predict, summary = prepare()
    rows = []
    for i, sample in enumerate(dataset):
        prob, mask_image, extra = predict(sample)
        atomic_write_bytes(out_dir / f"{sample.id}.npy", encode_array(np.asarray(prob, dtype=np.float32), "NPY"))
        atomic_write_bytes(mask_dir / f"{sample.id}.png", encode_array(mask_image, "PNG"))
        fov_pixels = int(sample.fov.sum())
        vessel_pixels = int(np.count_nonzero(mask_image))
        rows.append({"id": sample.id, "fov_pixels": fov_pixels, "fov_computed": bool(sample.fov_computed),
                     "vessel_pixels": vessel_pixels, **extra})
        if not args.json:
            print(f"[{i + 1}/{len(dataset)}] {sample.id}: {vessel_pixels} vessel pixels "
                  f"({100 * vessel_pixels / max(fov_pixels, 1):.2f}% of the FOV)", flush=True)
    if args.json:
        print(json.dumps({"dataset": args.dataset, "root": str(args.root), "split": args.split, **summary,
                          "out_dir": str(out_dir), "n_samples": len(rows), "samples": rows}))
    else:
        print(f"wrote {len(rows)} probability maps to {out_dir} and masks to {mask_dir}; score them with: "
              f"retsam evaluate --dataset {args.dataset} --root {args.root} --split {args.split} "
              f"--pred {out_dir}")
    return 0
