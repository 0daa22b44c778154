"""``retsam gan``: train a fundus/vessel GAN, sample a dataset from it, report its quality.

::

    retsam gan train --dataset NAME --root DIR [--split train] --out DIR
                     [--mode conditional|paired] [--unit patch|image] [--size 256]
                     [--iterations 6000] [--batch-size 1] [--beta 10]
                     [--scales 3] [--no-amp] [--device cpu]
                     [--resume DIR/last.pt | --overwrite] [--seed 0] [--sample-every 500]
                     [--checkpoint-every 500]
    retsam gan sample --checkpoint F --n N --seed S --out DIR [--overwrite]
                      [--mask-dir DIR | --mask-dataset NAME --mask-root DIR [--mask-split S]] [--warp]
    retsam gan report --checkpoint F --dataset NAME --root DIR [--split train]
                      [--n N] [--seed 0] [--json] [--figure report.png]

The defaults (:class:`napari_retsam.gan.config.GanConfig`) train the
mask-conditioned generator on 256-px patches at native resolution; the
method's whole-image setting is ``--unit image --size 512 --iterations 14000
--g-channels 32 --d-channels 64`` (a GPU job).

``train`` writes ``last.pt`` (full, resumable state), ``generator_last.pt``,
``losses.jsonl``, ``config.json`` and ``samples/iter_NNNNNN.png`` into ``--out``;
the run owns that folder while it runs (a second run there is refused), and a
folder holding an earlier run is refused unless ``--resume`` continues it or
``--overwrite`` replaces it. ``--size`` is at most 2048 px.
Multi-GPU: ``torchrun --nproc_per_node 4 -m napari_retsam.cli.main gan train ... --device cuda``.

``sample`` writes a generic dataset folder (``images/``, ``masks/``, ``fov/``,
``manifest.json``); the same arguments write byte-identical files.

``report`` prints the FID-free quality report (:mod:`napari_retsam.gan.report`),
or one JSON object with ``--json``.

Only the standard library is imported at module level.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from napari_retsam.errors import RetsamInputError
from napari_retsam.gan.config import GanConfig

#: The defaults every option shows (one source: the config dataclass).
_D = GanConfig()

__all__ = ["register", "run", "parse_int", "parse_float", "check_device"]


def parse_int(value: Any, name: str, minimum: int | None = 1) -> int:
    """An integer option, with a one-line error naming the option."""
    try:
        number = int(str(value).strip(), 10)
    except ValueError:
        raise RetsamInputError(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise RetsamInputError(f"{name} must be >= {minimum}, got {number}")
    return number


def parse_float(value: Any, name: str) -> float:
    """A finite float option >= 0."""
    import math

    try:
        number = float(value)
    except ValueError:
        raise RetsamInputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise RetsamInputError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def check_device(device: str) -> str:
    """The device the GAN runs on: the package's one device rule (``options.DEVICE_CHOICES``,
    ``select_device``: auto, cpu, cuda, cuda:N, mps; a device that is not there is refused)."""
    from napari_retsam.options import check_device as check_device_name
    from napari_retsam.sam.device import select_device

    return str(select_device(check_device_name(device)))


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``retsam gan`` with its ``train``, ``sample`` and ``report`` actions."""
    parser = subparsers.add_parser(
        "gan",
        help="GAN synthesis of paired fundus images and vessel masks",
        description="Train a multi-scale GAN on a vessel dataset, sample paired images and masks, "
        "and report their quality without FID.",
    )
    actions = parser.add_subparsers(dest="gan_action", metavar="ACTION")
    actions.required = True
    fmt = argparse.RawDescriptionHelpFormatter

    train = actions.add_parser(
        "train", help="train a generator", formatter_class=fmt,
        description="Train the fundus/vessel GAN (Adam 2e-4, beta1 0.5; LSGAN + beta x feature matching).",
        epilog="examples:\n"
        "  retsam gan train --dataset drive --root data/DRIVE --out runs/gan\n"
        "  retsam gan train --dataset drive --root data/DRIVE --out runs/gan512 --unit image --size 512 "
        "--iterations 14000 --g-channels 32 --d-channels 64 --device cuda\n"
        "  retsam gan train --dataset drive --root data/DRIVE --out runs/gan --resume runs/gan/last.pt\n"
        "  torchrun --nproc_per_node 2 -m napari_retsam.cli.main gan train --dataset drive --root data/DRIVE "
        "--out runs/gan --device cuda",
    )
    train.add_argument("--dataset", required=True, help="drive, stare, chase or folder")
    train.add_argument("--root", required=True, help="the dataset's folder")
    train.add_argument("--split", default="train", help="train, test or all (default: train)")
    train.add_argument("--annotator", default="1", help="vessel annotator, 1 or 2 (default: 1)")
    train.add_argument("--out", required=True, help="output folder for checkpoints, samples and logs")
    train.add_argument("--mode", default=_D.mode, help="conditional (vessel mask + FOV + noise -> image: pairs "
                       "right by construction) or paired (noise -> image + mask) (default: %(default)s)")
    train.add_argument("--unit", default=_D.unit, help="patch (--size px crops at native resolution, the "
                       "segmentation tile) or image (whole images fitted to --size) (default: %(default)s)")
    train.add_argument("--size", default=str(_D.size), help="patch or image side in px, a power of two "
                       "(default: %(default)s)")
    train.add_argument("--iterations", default=str(_D.iterations), help="generator updates (default: %(default)s)")
    train.add_argument("--batch-size", default=str(_D.batch_size),
                       help="pairs per iteration and process (default: %(default)s)")
    train.add_argument("--beta", default=f"{_D.beta:g}", help="feature-matching weight (default: %(default)s)")
    train.add_argument("--scales", default=str(_D.scales), help="number of discriminators K (default: %(default)s)")
    train.add_argument("--lr", default=f"{_D.lr:g}", help="Adam learning rate (default: %(default)s)")
    train.add_argument("--g-channels", default=str(_D.g_channels),
                       help="generator channels at full resolution (default: %(default)s)")
    train.add_argument("--d-channels", default=str(_D.d_channels),
                       help="first discriminator layer channels (default: %(default)s)")
    train.add_argument("--no-amp", action="store_true", help="train in float32 (default: bf16 autocast where the "
                       "CPU or GPU runs bf16 natively)")
    train.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (default: cpu)")
    train.add_argument("--resume", default=None, help="continue from a last.pt of an earlier run")
    train.add_argument("--overwrite", action="store_true",
                       help="replace an earlier run in --out (default: refuse; use --resume to continue it)")
    train.add_argument("--seed", default="0", help="random seed (default: 0)")
    train.add_argument("--sample-every", default=str(_D.sample_every),
                       help="write a sample grid every N iterations (0: never; default: %(default)s)")
    train.add_argument("--checkpoint-every", default=str(_D.checkpoint_every),
                       help="write checkpoints every N iterations (default: %(default)s)")
    train.set_defaults(func=run, gan_run=_run_train)

    sample = actions.add_parser(
        "sample", help="generate a paired dataset folder", formatter_class=fmt,
        description="Generate N image/mask pairs and write images/, masks/, fov/ and manifest.json.",
        epilog="examples:\n"
        "  retsam gan sample --checkpoint runs/gan/generator_last.pt --n 100 --seed 0 --out synth\n"
        "  retsam gan sample --checkpoint cond/generator_last.pt --n 20 --seed 1 --out synth "
        "--mask-dir my_masks --overwrite\n"
        "  retsam gan sample --checkpoint cond/generator_last.pt --n 100 --seed 2 --out synth "
        "--mask-dataset drive --mask-root data/DRIVE --warp",
    )
    sample.add_argument("--checkpoint", required=True, help="generator_last.pt or last.pt")
    sample.add_argument("--n", required=True, help="number of pairs")
    sample.add_argument("--seed", default="0", help="random seed (default: 0)")
    sample.add_argument("--out", required=True, help="export folder (must be empty unless --overwrite)")
    sample.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    sample.add_argument("--mask-dir", default=None, help="conditional generators: folder of vessel masks, used "
                        "in name order (whole-image generators: at the generator's size; patch generators: "
                        "patches are cut from larger masks)")
    sample.add_argument("--mask-dataset", default=None, help="conditional generators: take the vessel "
                        "annotations of this dataset (drive, stare, chase, folder): patches at native "
                        "resolution for a patch generator, whole masks fitted to the FOV otherwise")
    sample.add_argument("--mask-root", default=None, help="the folder of --mask-dataset")
    sample.add_argument("--mask-split", default="train", help="split of --mask-dataset (default: train)")
    sample.add_argument("--warp", action="store_true", help="conditional generators: give every mask a random "
                        "flip/rotation and an elastic warp (seeded by --seed)")
    sample.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (default: cpu)")
    sample.set_defaults(func=run, gan_run=_run_sample)

    report = actions.add_parser(
        "report", help="quality report against a real dataset", formatter_class=fmt,
        description="Colour histogram distance, vessel density, contrast and pairing Dice "
        "(mask vs Frangi segmentation of the image) of generated and real pairs.",
        epilog="example:\n  retsam gan report --checkpoint runs/gan/generator_last.pt --dataset drive "
        "--root data/DRIVE --json",
    )
    report.add_argument("--checkpoint", required=True, help="generator_last.pt or last.pt")
    report.add_argument("--dataset", required=True, help="drive, stare, chase or folder")
    report.add_argument("--root", required=True, help="the dataset's folder")
    report.add_argument("--split", default="train", help="train, test or all (default: train)")
    report.add_argument("--annotator", default="1", help="vessel annotator, 1 or 2 (default: 1)")
    report.add_argument("--n", default=None, help="generated samples (default: as many as the real set: the images, or 4 patches per image)")
    report.add_argument("--seed", default="0", help="sampling seed (default: 0)")
    report.add_argument("--json", action="store_true", help="print one JSON object")
    report.add_argument("--figure", default=None, help="also save the report figure as this PNG")
    report.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (default: cpu)")
    report.set_defaults(func=run, gan_run=_run_report)
    return parser


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action."""
    return int(args.gan_run(args))


def _open_dataset(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from napari_retsam.data import open_dataset

    annotator = parse_int(args.annotator, "--annotator")
    dataset = open_dataset(args.dataset, args.root, split=args.split, annotator=annotator)
    info = {"name": dataset.name, "split": dataset.split, "annotator": annotator, "n_images": len(dataset)}
    return dataset, info


def _own_run_folder(args: argparse.Namespace) -> Any:
    """Before any work: ``--out`` must not be in use by another run nor hold an earlier one
    (unless ``--resume``/``--overwrite``), and no output may be an input. Returns the held lock."""
    import contextlib
    from pathlib import Path

    from napari_retsam.cli._files import check_not_input
    from napari_retsam.gan.train import RUN_FILES
    from napari_retsam.run_lock import check_fresh_run_folder, is_main_process, lock_run_folder

    out = Path(args.out)
    if args.resume and not Path(args.resume).is_file():
        raise RetsamInputError(f"--resume file {args.resume} does not exist")
    check_not_input([("--root", args.root)], files=[("output", out / n) for n in RUN_FILES[:-1]],
                    folders=[("sample folder", out / "samples")])
    if not is_main_process():
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(lock_run_folder(out, "retsam gan train"))
    try:
        check_fresh_run_folder(out, RUN_FILES, overwrite=args.overwrite, resume=args.resume, what="GAN run")
    except BaseException:
        stack.close()
        raise
    return stack


def _run_train(args: argparse.Namespace) -> int:
    from napari_retsam.gan.config import GanConfig
    from napari_retsam.gan.sample import check_seed

    from napari_retsam.cli._args import MAX_GAN_SIZE, check_range

    config = GanConfig(
        unit=args.unit,
        amp=not args.no_amp,
        size=check_range(parse_int(args.size, "--size", 16), "--size", 16, MAX_GAN_SIZE,
                         "larger GANs do not fit in memory"),
        mode=args.mode,
        iterations=parse_int(args.iterations, "--iterations"),
        batch_size=parse_int(args.batch_size, "--batch-size"),
        beta=parse_float(args.beta, "--beta"),
        scales=parse_int(args.scales, "--scales"),
        lr=parse_float(args.lr, "--lr"),
        g_channels=parse_int(args.g_channels, "--g-channels"),
        d_channels=parse_int(args.d_channels, "--d-channels"),
        seed=check_seed(args.seed),
        sample_every=parse_int(args.sample_every, "--sample-every", 0),
        checkpoint_every=parse_int(args.checkpoint_every, "--checkpoint-every"),
    )
    device = check_device(args.device)
    with _own_run_folder(args):
        from napari_retsam.gan.data import training_pairs

        dataset, info = _open_dataset(args)
        pairs = training_pairs(dataset, config)
        if pairs.masks is None and os.environ.get("RANK", "0") == "0":
            print("retsam: warning: this dataset has no vessel masks; training images only "
                  "(the generator's masks stay untrained and export will refuse)", file=sys.stderr)

        from napari_retsam.gan.train import train_gan

        def progress(done: int, total: int, message: str) -> None:
            if done == 1 or done == total or done % max(1, min(100, total // 20 or 1)) == 0:
                print(message, flush=True)

        from napari_retsam.cli._interrupt import stop_on_interrupt
        from napari_retsam.progress import Cancelled

        with stop_on_interrupt("GAN training") as should_stop:
            try:
                result = train_gan(config, pairs, args.out, device=device, resume=args.resume, dataset_info=info,
                                   progress=progress, should_stop=should_stop, overwrite=args.overwrite)
            except Cancelled as stop:  # last.pt was written first: say how to continue
                return _stopped(stop)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports (and writes) alone
        print(f"generator checkpoint: {result.generator_checkpoint}")
        print(f"training state: {result.state_checkpoint} (iteration {result.iteration})")
    return 0


def _stopped(stop: Any) -> int:
    """A stopped run (:class:`~napari_retsam.progress.Cancelled`): the resume hint on stderr (rank 0),
    exit code 130 (stopped by the user, as ``cli.main`` answers an interrupt)."""
    partial = stop.partial
    if os.environ.get("RANK", "0") == "0":
        if partial is None:
            print(f"retsam: {stop}", file=sys.stderr)
        else:
            print(f"retsam: GAN training stopped at iteration {partial.iteration}; generator: "
                  f"{partial.generator_checkpoint}; continue with --resume {partial.state_checkpoint}",
                  file=sys.stderr)
    return 130


def _check_sample_outputs(args: argparse.Namespace) -> None:
    """The export (``images/``, ``masks/``, ``fov/``, ``manifest.json`` of ``--out``) must not
    replace an input: the checkpoint, ``--mask-dir`` or a file of ``--mask-dataset``."""
    from pathlib import Path

    from napari_retsam.cli._files import check_not_input, dataset_files

    inputs: list[tuple[str, Any]] = [("--checkpoint", args.checkpoint), ("--mask-dir", args.mask_dir)]
    if args.mask_dataset is not None and Path(args.mask_root).is_dir():
        from napari_retsam.data import open_dataset

        inputs += dataset_files(open_dataset(args.mask_dataset, args.mask_root, split=args.mask_split))
    out = Path(args.out)
    check_not_input(inputs, files=[("export file", out / "manifest.json")],
                    folders=[("export folder", out / sub) for sub in ("images", "masks", "fov")])


def _run_sample(args: argparse.Namespace) -> int:
    from napari_retsam.gan.sample import check_seed, sample_and_export

    n = parse_int(args.n, "--n")
    seed = check_seed(args.seed)
    device = check_device(args.device)
    mask_dataset = None
    if args.mask_dataset is not None or args.mask_root is not None:
        if args.mask_dataset is None or args.mask_root is None:
            raise RetsamInputError("--mask-dataset and --mask-root go together")
        mask_dataset = (args.mask_dataset, args.mask_root, args.mask_split)
    _check_sample_outputs(args)
    manifest = sample_and_export(args.checkpoint, n, seed, args.out, overwrite=args.overwrite,
                                 mask_dir=args.mask_dir, mask_dataset=mask_dataset, warp=args.warp, device=device)
    print(f"wrote {n} pairs to {manifest.parent} (manifest {manifest.name})")
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from napari_retsam.gan.checkpoint import load_generator
    from napari_retsam.gan.report import quality_report, report_figure, report_summary_lines
    from napari_retsam.gan.sample import check_seed

    seed = check_seed(args.seed)
    n = None if args.n is None else parse_int(args.n, "--n")
    device = check_device(args.device)
    if args.figure:
        from napari_retsam.cli._files import check_not_input, dataset_files
        from napari_retsam.data import open_dataset

        dataset = open_dataset(args.dataset, args.root, split=args.split, annotator=parse_int(args.annotator,
                                                                                              "--annotator"))
        check_not_input([("--checkpoint", args.checkpoint), *dataset_files(dataset)],
                        files=[("--figure", args.figure)])
    from napari_retsam.gan.report import real_reference

    ckpt = load_generator(args.checkpoint)
    dataset, _ = _open_dataset(args)
    real = real_reference(dataset, ckpt, seed=seed)
    report = quality_report(ckpt, real, n=n, seed=seed, device=device)
    if args.figure:
        import io

        from napari_retsam.io_utils import atomic_write_bytes

        fig = report_figure(report)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        atomic_write_bytes(args.figure, buffer.getvalue())
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, allow_nan=True))
    else:
        for line in report_summary_lines(report):
            print(line)
    return 0
