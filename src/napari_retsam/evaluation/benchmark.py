"""``retsam benchmark``: the method's comparison table (its Table 2) on a dataset's test split.

Rows, in order, each evaluated with :func:`napari_retsam.metrics.evaluate_set`
on the same images (FOV-masked, ``prob >= threshold``; pooled plus per-image
mean ± population std):

=====================================  ===========================================
row                                    needs
=====================================  ===========================================
Frangi baseline                        nothing (always runs)
SAM (auto)                             a base SAM (``checkpoint``/``model_type``;
                                       default: the bundled LiteMedSAM)
SAM zero-shot (box prompts)            a base SAM
SAM fine-tuned (BSD loss)              ``finetuned``: a decoder-only project
                                       checkpoint (embedding-only fusion block)
SAM fine-tuned (BSD + fusion block)    ``fusion``: a checkpoint trained with the
                                       fusion block's pixel branch (the recipe)
SAM fine-tuned (BSD loss + GAN)        ``gan``: a project checkpoint trained on
                                       real plus GAN-synthetic pairs
=====================================  ===========================================

A row whose model the user did not name (no file given, vit_* weights not
downloadable) is kept as *skipped* with the reason; a file the user named must
load, or the command fails before any row runs. Box prompts: one box per image,
the bounding box of its FOV (the method's prompt-per-image protocol). Besides
``table.md``/``table.csv``/``protocol.json`` the run writes ``roc.png`` (the ROC
curves of every row that ran).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_retsam.errors import RetsamInputError
from napari_retsam.evaluation.comparison import Comparison
from napari_retsam.options import DEFAULT_MODEL_TYPE

ProgressFn = Callable[[int, int, str], None]

ROW_FRANGI = "Frangi baseline"
ROW_AUTO = "SAM (auto)"
ROW_BOX = "SAM zero-shot (box prompts)"
ROW_FT = "SAM fine-tuned (BSD loss)"
ROW_FUSION = "SAM fine-tuned (BSD + fusion block)"
ROW_FT_GAN = "SAM fine-tuned (BSD loss + GAN)"
ROWS: tuple[str, ...] = (ROW_FRANGI, ROW_AUTO, ROW_BOX, ROW_FT, ROW_FUSION, ROW_FT_GAN)


@dataclass
class BenchmarkOptions:
    """What ``retsam benchmark`` evaluates; see the module docstring."""

    dataset: str
    root: Path
    out: Path
    split: str = "test"
    annotator: int = 1
    limit: int = 0
    checkpoint: str | None = None
    model_type: str | None = None
    finetuned: str | None = None
    fusion: str | None = None
    gan: str | None = None
    tile: int = 0
    overlap: int = 64
    threshold: float = 0.5
    device: str | None = None
    download: bool = False
    auto_points: int = 32
    skip_auto: bool = False
    cache_dir: str | None = None


def fov_box(fov: np.ndarray) -> np.ndarray:
    """The box prompt of an image: its FOV's bounding box ``[[x0, y0, x1, y1]]``
    (pixel-index corners, inclusive; see :func:`napari_retsam.data.mask_bounding_box`)."""
    from napari_retsam.data import mask_bounding_box

    box = mask_bounding_box(fov)
    if box is None:
        raise RetsamInputError("empty field of view: no box prompt can be made")
    return box[None]


def _try_base_model(options: BenchmarkOptions) -> tuple[Any | None, Path | None, str]:
    """(model, checkpoint path, reason when missing)."""
    from napari_retsam.sam import load_sam
    from napari_retsam.sam.weight_cache import resolve_checkpoint

    model_type = options.model_type or DEFAULT_MODEL_TYPE
    try:
        path = resolve_checkpoint(options.checkpoint, model_type, download=options.download)
        return load_sam(path, model_type=options.model_type, device=options.device), path, ""
    except RetsamInputError as exc:
        return None, None, str(exc)


def run_benchmark(options: BenchmarkOptions, progress: ProgressFn | None = None) -> Comparison:
    """Evaluate every row that can run and write ``table.md``, ``table.csv`` and
    ``protocol.json`` into ``options.out``; returns the table."""
    from napari_retsam.baseline import frangi_probability
    from napari_retsam.data import open_dataset
    from napari_retsam.io_utils import ensure_writable_dir
    from napari_retsam.metrics import evaluate_set

    samples = list(open_dataset(options.dataset, options.root, options.split, options.annotator))
    if options.limit:
        samples = samples[: options.limit]
    if not samples:
        raise RetsamInputError(f"{options.dataset} at {options.root} has no {options.split} images")
    missing = [s.id for s in samples if s.gold is None]
    if missing:
        raise RetsamInputError(f"no gold standard for {', '.join(missing[:5])}: cannot benchmark")

    total = len(ROWS) * len(samples)
    done = 0

    def tell(message: str) -> None:
        if progress is not None:
            progress(done, total, message)

    predictions: dict[str, list[np.ndarray] | str] = {}

    def run_row(name: str, predict: Callable[[Any], np.ndarray]) -> None:
        nonlocal done
        probs = []
        for s in samples:
            tell(f"{name}: {s.id}")
            probs.append(predict(s))
            done += 1
        predictions[name] = probs

    base, base_path, why = _try_base_model(options)
    if base is None and options.checkpoint:
        raise RetsamInputError(why)
    tuned_models: dict[str, Any] = {}
    for row, path, flag in ((ROW_FT, options.finetuned, "--finetuned"), (ROW_FUSION, options.fusion, "--fusion"),
                            (ROW_FT_GAN, options.gan, "--gan")):
        if not path:
            predictions[row] = f"no fine-tuned checkpoint given ({flag} FILE)"
            continue
        from napari_retsam.sam import load_sam

        try:
            tuned_models[row] = load_sam(base_path, model_type=options.model_type, device=options.device,
                                         finetuned=path)
        except RetsamInputError as exc:  # a file the user named must load
            raise RetsamInputError(f"{flag} {path}: {exc}") from exc

    out = ensure_writable_dir(options.out)  # after every named file loaded: a refused run leaves nothing
    run_row(ROW_FRANGI, lambda s: frangi_probability(s.image, s.fov))

    tile = options.tile or None
    # The base and the decoder-only fine-tuned models share the frozen encoder, so
    # one embedding cache serves every box-prompted row (keyed by encoder identity).
    from napari_retsam.sam import EmbeddingCache

    embeddings = EmbeddingCache(disk_dir=options.cache_dir)
    if base is None:
        reason = f"no base SAM: {why}"
        for row in (ROW_AUTO, ROW_BOX):
            predictions[row] = reason
        done += 2 * len(samples)
    else:
        from napari_retsam.sam import Segmenter, auto_segment

        if options.skip_auto:
            predictions[ROW_AUTO] = "skipped on request (--skip-auto)"
            done += len(samples)
        else:
            run_row(ROW_AUTO, lambda s: auto_segment(base, s.image, points_per_side=options.auto_points).prob)
        segmenter = Segmenter(base, cache=embeddings)
        run_row(ROW_BOX, lambda s: segmenter.segment(s.image, fov_box(s.fov), tile=tile,
                                                     overlap=options.overlap).prob)

    for row, model in tuned_models.items():
        from napari_retsam.sam import Segmenter

        tuned = Segmenter(model, cache=embeddings)
        run_row(row, lambda s, m=tuned: m.segment(s.image, fov_box(s.fov), tile=tile,
                                                  overlap=options.overlap).prob)

    table = Comparison(protocol={
        "dataset": options.dataset, "root": str(options.root), "split": options.split,
        "annotator": options.annotator, "images": [s.id for s in samples],
        "fov": "shipped" if not any(s.fov_computed for s in samples) else "computed from the image where none ships",
        "region": "FOV", "threshold": options.threshold, "threshold_rule": f"prob >= {options.threshold}",
        "aggregation": "pooled over all FOV pixels; per-image mean ± population std",
        "prompt": "one box per image: the bounding box of its FOV",
        "tile": options.tile, "overlap": options.overlap if options.tile else None,
        "base_checkpoint": str(base_path) if base_path else None,
        "model_type": getattr(base, "model_type", options.model_type),
        "finetuned": options.finetuned, "fusion_finetuned": options.fusion, "gan_finetuned": options.gan,
    })
    golds = [s.gold for s in samples]
    fovs = [s.fov for s in samples]
    for row in ROWS:
        item = predictions[row]
        if isinstance(item, str):
            table.add(row, skipped=item)
        else:
            table.add(row, evaluate_set(item, golds, fovs, options.threshold, ids=[s.id for s in samples],
                                        annotator=options.annotator, dataset=options.dataset,
                                        split=options.split))
    table.write(out, stem="table")
    _roc_figure(out / "roc.png", predictions, golds, fovs)
    if progress is not None:
        progress(total, total, "done")
    return table


def _roc_figure(path: Path, predictions: dict[str, Any], golds: list[np.ndarray], fovs: list[np.ndarray]) -> None:
    """ROC curves (pooled FOV pixels) of every row that ran, with their AUCs."""
    from napari_retsam.evaluation.figures import save_roc_plot
    from napari_retsam.metrics import roc_auc, roc_curve
    from napari_retsam.metrics.roc import thin_curve

    curves = []
    gold = np.concatenate([g[f] for g, f in zip(golds, fovs)])
    if gold.all() or not gold.any():
        return
    for row, probs in predictions.items():
        if isinstance(probs, str):
            continue
        scores = np.concatenate([p[f] for p, f in zip(probs, fovs)])
        fpr, tpr, _ = roc_curve(scores, gold)
        curves.append((row, *thin_curve(fpr, tpr), roc_auc(scores, gold)))
    if curves:
        save_roc_plot(path, curves)
