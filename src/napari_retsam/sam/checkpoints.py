"""SAM checkpoint formats: the official state dict and the project's fine-tuned dict.

Where the files come from (cache, download, published hashes, reading a file once)
is :mod:`napari_retsam.sam.weight_cache`; this module knows what is inside them.
Every file is read once (:func:`~napari_retsam.sam.weight_cache.read_weights`:
``torch.load(path, map_location="cpu", weights_only=True)`` and the SHA-256 from the
same bytes) and the loaded dict is passed down: a checkpoint never runs code.

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

import os
from pathlib import Path
from typing import Any

from napari_retsam import __version__
from napari_retsam.errors import RetsamInputError
from napari_retsam.io_utils import atomic_save_torch, file_key, load_torch_checkpoint
from napari_retsam.progress import ProgressFn, StopFn
from napari_retsam.sam.weight_cache import (
    NOT_DICT,
    UNREADABLE,
    WeightsFile,
    locate_checkpoint,
    read_weights,
)

__all__ = [
    "PROJECT_FORMAT",
    "check_finite_state",
    "load_sam",
    "project_checkpoint_dict",
    "read_checkpoint",
    "save_official_style",
    "save_project_checkpoint",
    "validate_project_checkpoint",
]

PROJECT_FORMAT = "napari-retsam/finetuned-v1"
_PROBE_KEY = "image_encoder.patch_embed.proj.weight"
#: Files whose tensors were all finite, by (resolved path, size, mtime_ns).
_FINITE: set[tuple[str, int, int]] = set()


def check_finite_state(path: Path, state: dict[str, Any], what: str = "checkpoint") -> None:
    """Refuse a state dict holding NaN/inf weights: one line naming the file and the first bad tensor."""
    from napari_retsam.checkpoint_fields import first_non_finite

    bad = first_non_finite(state)
    if bad is not None:
        raise RetsamInputError(f"{what} {path} holds NaN/inf values in tensor {bad!r}; refusing to use it")


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with clear errors and no
    hashing (:func:`napari_retsam.io_utils.load_torch_checkpoint`); model loading goes
    through :func:`~napari_retsam.sam.weight_cache.read_weights` instead."""
    return load_torch_checkpoint(path, missing="checkpoint file {path} does not exist", unreadable=UNREADABLE,
                                 not_dict=NOT_DICT)


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


def _official_state(loaded: WeightsFile, model_type: str | None, config: Any | None) -> tuple[dict[str, Any], str, Any]:
    """The checked official state dict of an already read file, its model type and config."""
    from napari_retsam.sam.models import MODEL_CONFIGS

    path, state = loaded.path, loaded.state
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
    key = file_key(path)
    if not loaded.published and key not in _FINITE:
        check_finite_state(path, state)
        _FINITE.add(key)
    return state, model_type, config


def _given(value: Any) -> bool:
    return value is not None and str(value) != ""


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

    Each file is read once (:func:`~napari_retsam.sam.weight_cache.read_weights`).
    The returned model is in eval mode on ``device``.
    """
    from napari_retsam.options import DEFAULT_MODEL_TYPE
    from napari_retsam.sam.device import select_device

    default_type = model_type or DEFAULT_MODEL_TYPE
    target = device if device is not None and not isinstance(device, str) else select_device(device)

    finetuned_file: WeightsFile | None = None
    base: WeightsFile | Path | None = None  # a path until it is needed (decoder-only files)
    if _given(finetuned):
        if _given(checkpoint):
            base = locate_checkpoint(checkpoint, default_type)
        elif _given(base_checkpoint):
            base = locate_checkpoint(base_checkpoint, default_type)
        finetuned_file = read_weights(Path(finetuned).expanduser())
    elif _given(checkpoint):
        loaded = read_weights(locate_checkpoint(checkpoint, default_type))
        if loaded.state.get("format") == PROJECT_FORMAT:
            finetuned_file = loaded
            base = Path(base_checkpoint).expanduser() if base_checkpoint else None
        else:
            base = loaded
    else:
        base = locate_checkpoint(None, default_type, download=download, progress=progress, should_stop=should_stop)

    if finetuned_file is None:
        assert base is not None
        base_file = base if isinstance(base, WeightsFile) else read_weights(base)
        state, mtype, config = _official_state(base_file, model_type or (None if checkpoint else default_type), None)
        model = _assemble(state, mtype, config, num_classes=1, fusion_state=None, fusion_config=None)
        model.checkpoint_sha256 = base_file.sha256
        model.encoder_sha256 = base_file.sha256
        model.source = {"checkpoint": str(base_file.path), "finetuned": None}
        return model.to(target).eval()
    assert base is None or isinstance(base, Path)
    return _load_project(finetuned_file, model_type, base, download, progress, should_stop).to(target).eval()


def _load_project(
    loaded: WeightsFile,
    model_type: str | None,
    base_path: Path | None,
    download: bool,
    progress: ProgressFn | None,
    should_stop: StopFn | None,
):
    path, state = loaded.path, loaded.state
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
        encoder_sha = loaded.sha256
        used_base = None
    else:
        if base_path is None:
            hint = state.get("base_checkpoint_path")
            if hint and Path(hint).is_file():
                base_path = Path(hint)
            else:
                try:
                    base_path = locate_checkpoint(None, ft_type, download=download, progress=progress,
                                                  should_stop=should_stop)
                except RetsamInputError as exc:
                    raise RetsamInputError(
                        f"fine-tuned checkpoint {path} needs its base {ft_type} model: pass it with --checkpoint / "
                        f"base_checkpoint= ({exc})"
                    ) from exc
        base_file = read_weights(base_path)
        full, _, _ = _official_state(base_file, ft_type, config)
        encoder_sha = base_file.sha256
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
    model.checkpoint_sha256 = loaded.sha256
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
