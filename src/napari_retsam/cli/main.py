"""Entry point of the ``retsam`` command line.

Each sub-command lives in its own module of this package and exposes
``register(subparsers) -> argparse.ArgumentParser`` that sets ``func`` (a
callable taking the parsed ``argparse.Namespace`` and returning an exit code).
Command modules import only the standard library at module level, so building
the parser is cheap and, for example, ``retsam evaluate`` never imports torch.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 130
interrupted by the user.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from napari_retsam import __version__
from napari_retsam.errors import RetsamInputError

#: Sub-command modules, in the order ``retsam --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "napari_retsam.cli.data_cmd",
    "napari_retsam.cli.evaluate_cmd",
    "napari_retsam.cli.baseline_cmd",
    "napari_retsam.cli.segment_cmd",
    "napari_retsam.cli.gan_cmd",
    "napari_retsam.cli.finetune_cmd",
    "napari_retsam.cli.demo_cmd",
    "napari_retsam.cli.benchmark_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    """The full ``retsam`` parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="retsam",
        description="Retinal vessel segmentation with SAM: data, metrics, "
        "segmentation, fine-tuning and GAN synthesis from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def fail(message: str) -> int:
    """Print ``retsam: error: message`` on stderr and return exit code 2."""
    print(f"retsam: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RetsamInputError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("retsam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
