"""Entry point of the ``retsam`` command line.

Each sub-command lives in its own module of this package and exposes
``register(subparsers) -> argparse.ArgumentParser`` that sets ``func`` (a
callable taking the parsed ``argparse.Namespace`` and returning an exit code).
Command modules import only the standard library at module level, so building
the parser is cheap and, for example, ``retsam evaluate`` never imports torch.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 130
interrupted by the user.

Library warnings (Python ``warnings`` and WARNING log records of libraries such
as Pillow, tifffile or torch) are captured while a command runs: after a bad
input only the one ``retsam: error:`` line is printed; after a success each
distinct warning is printed once as one ``retsam: warning:`` line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence

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


class _Captured(logging.Handler):
    """Warnings and library log records seen while a command runs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.caught: list[warnings.WarningMessage] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] == "napari_retsam":
            return
        with contextlib.suppress(Exception):
            self.add(f"{record.name.split('.')[0]}: {record.getMessage()}")

    def add(self, text: str) -> None:
        line = " ".join(str(text).split())
        if line and line not in self.lines:
            self.lines.append(line)

    def report(self) -> None:
        for w in self.caught:
            text = str(w.message).strip().splitlines()
            self.add(f"{w.category.__name__}: {text[0] if text else ''}")
        self.caught = []
        for line in self.lines[:20]:
            print(f"retsam: warning: {line[:300]}", file=sys.stderr)
        if len(self.lines) > 20:
            print(f"retsam: warning: ... and {len(self.lines) - 20} more warnings", file=sys.stderr)


@contextlib.contextmanager
def _capture_library_messages() -> Iterator[_Captured]:
    captured = _Captured()
    root = logging.getLogger()
    root.addHandler(captured)
    try:
        with warnings.catch_warnings(record=True) as caught:
            captured.caught = caught
            yield captured
    finally:
        root.removeHandler(captured)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _capture_library_messages() as captured:
        try:
            code = int(args.func(args) or 0)
        except RetsamInputError as exc:
            return fail(str(exc))
        except KeyboardInterrupt:
            print("retsam: interrupted", file=sys.stderr)
            return 130
        except BaseException:
            captured.report()  # a genuine bug: show what the libraries said before the traceback
            raise
    captured.report()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
