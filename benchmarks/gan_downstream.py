"""Do GAN pairs help SAM segment vessels? The downstream test, on DRIVE and cross-dataset on STARE.

The GAN is judged by what it is for: the gain of a downstream segmenter trained
with its pairs. The segmenter is the bundled LiteMedSAM, fine-tuned
decoder-only with the BSD + BCE loss (the method's PEFT: embedding-only fusion,
no pixel branch, so the many runs fit on a CPU), every run from the same start,
for the same number of steps and schedule, evaluated on all 20 DRIVE test
images (FOV, pooled, 1st annotator, threshold 0.5) and all 20 STARE images
(labels-ah, computed FOV).

Rows (each for every seed; the seed sets the data order, the augmentation and
which synthetic pairs are drawn from the pool):

  real 20                       the 20 DRIVE training images
  real 20 + GAN 50 % / 100 %    plus synthetic tiles, 0.5 / 1 per real tile
  GAN only                      as many synthetic tiles as real ones, no real data
  real 4                        the scarce case: DRIVE 21-24 only
  real 4 + GAN 100 % / 300 %    plus synthetic tiles from a GAN trained on those 4 images only
  real 4 + GAN-20 100 %         plus synthetic tiles for warped patches of the 4 images' masks from the
                                GAN trained on all 20 (not a clean scarce setting: its appearance
                                model saw 16 more annotated images)

Synthetic pairs: the conditional generator is fed vessel masks cut from its own
training images (256-px patches at native resolution, centred in the FOV) under
a random symmetry and an elastic warp, so each pair is right by construction and
no test image is seen. The full-data rows use the GAN trained on the 20 training
images, the scarce rows the GAN trained on DRIVE 21-24 alone.

Quality (section 2 of the GAN issue): pairing Dice of generated and real
patches under the fine-tuned LiteMedSAM of the recipe (``--segmenter``), the
shuffled-pair chance level, vessel density and contrast statistics, sample grids.

All rows share one on-disk embedding cache: every tile is embedded once.

    python benchmarks/gan_downstream.py --drive ../shared/data/DRIVE --stare ../shared/data/STARE \
        --gan runs/gan_drive20/generator_last.pt --gan-scarce runs/gan_drive4/generator_last.pt \
        --segmenter runs/drive/best.pt --out runs/gan_downstream
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

SCARCE_IDS = ("21_training", "22_training", "23_training", "24_training")


def _tiles_of(items: list[Any], tile: int, overlap: int) -> int:
    from napari_retsam.sam.tiling import tile_grid

    return sum(len(tile_grid(it.image.shape[0], it.image.shape[1], tile, overlap)) for it in items)


def _synthetic_pool(ckpt: Any, dataset: Any, n: int, seed: int) -> tuple[list[Any], dict[str, Any]]:
    """``n`` generated pairs as training items, conditioned on warped patches of ``dataset``'s masks."""
    from napari_retsam.gan.sample import conditioning_masks, generate
    from napari_retsam.training.data import TrainItem

    masks, fovs, _ = conditioning_masks(ckpt, ("dataset", dataset), n, seed, warp=True)
    gen = generate(ckpt, n, seed, masks=masks, fovs=fovs)
    items = [TrainItem(f"gan{seed}_{i:04d}", gen.images[i], gen.masks[i], gen.fov[i], "synthetic")
             for i in range(n)]
    return items, {"images": gen.images, "masks": gen.masks, "fovs": gen.fov}


def _sam_segment_fn(model: Any, cache: Any):
    """segment(images, fovs) -> masks with a fine-tuned SAM, one FOV box per patch."""
    from napari_retsam.data import mask_bounding_box
    from napari_retsam.sam import Segmenter

    segmenter = Segmenter(model, cache=cache)

    def segment(images: np.ndarray, fovs: np.ndarray) -> np.ndarray:
        out = []
        for img, fov in zip(images, np.broadcast_to(fovs, images.shape[:3])):
            box = mask_bounding_box(fov)
            if box is None:
                out.append(np.zeros(fov.shape, bool))
                continue
            prob = segmenter.segment(img, box[None], tile=256, overlap=32).prob
            out.append((prob > 0.5) & fov)
        return np.stack(out)

    return segment


def _grid_png(path: Path, images: np.ndarray, masks: np.ndarray, n: int = 8) -> None:
    from napari_retsam.gan.imaging import sample_grid, write_png

    write_png(path, sample_grid(images[:n], masks[:n]))


def _evaluate(model: Any, cache: Any, sets: dict[str, list[Any]]) -> dict[str, dict[str, float]]:
    from napari_retsam.data import mask_bounding_box
    from napari_retsam.metrics import evaluate_set
    from napari_retsam.sam import Segmenter

    segmenter = Segmenter(model, cache=cache)
    out = {}
    for name, samples in sets.items():
        probs = [segmenter.segment(s.image, mask_bounding_box(s.fov)[None], tile=256, overlap=32).prob
                 for s in samples]
        pooled = evaluate_set(probs, [s.gold for s in samples], [s.fov for s in samples]).pooled
        out[name] = {"auc": pooled.auc, "f1": pooled.f1, "se": pooled.se, "sp": pooled.sp}
    return out


def _summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drive", required=True)
    parser.add_argument("--stare", required=True)
    parser.add_argument("--gan", required=True, help="generator trained on the 20 DRIVE training images")
    parser.add_argument("--gan-scarce", required=True, help="generator trained on DRIVE 21-24 only")
    parser.add_argument("--segmenter", required=True, help="fine-tuned checkpoint measuring the pairing Dice")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--quality-n", type=int, default=48, help="patches per set for the quality report")
    parser.add_argument("--rows", nargs="*", default=None, help="row names to run (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "auto"),
                        help="encoder precision of every embedding, training ones included (default bf16, "
                        "which halves the embedding time of the many runs; it lowers what short fine-tuning "
                        "reaches, equally for every row: compare rows, not absolute numbers)")
    parser.add_argument("--summary-only", action="store_true", help="recompute the summary of the runs on file")
    parser.add_argument("--no-quality", action="store_true", help="skip the quality section (e.g. before the "
                        "GANs are trained; a later run adds it, finished runs are kept)")
    args = parser.parse_args()
    t_start = time.perf_counter()

    import torch

    torch.set_num_threads(args.threads)
    from napari_retsam.data import open_dataset
    from napari_retsam.gan.checkpoint import load_generator
    from napari_retsam.gan.report import quality_report, real_reference
    from napari_retsam.sam import EmbeddingCache, load_sam
    from napari_retsam.training.config import FinetuneConfig
    from napari_retsam.training.data import items_from_dataset
    from napari_retsam.training.loop import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = out / "embedding_cache"
    cache = EmbeddingCache(disk_dir=cache_dir)
    results_path = out / "gan_downstream.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.setdefault("runs", {})
    seconds_before = float(results.get("script_seconds_total", 0.0))  # earlier invocations (the run resumes)

    def save() -> None:
        if not args.summary_only:
            results["script_seconds_total"] = round(seconds_before + time.perf_counter() - t_start, 1)
        tmp = results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, results_path)

    drive_train = open_dataset("drive", args.drive, split="train")
    scarce_train = [s for s in drive_train if s.id in SCARCE_IDS]
    assert len(scarce_train) == 4, [s.id for s in drive_train][:5]
    drive_test = list(open_dataset("drive", args.drive, split="test"))
    stare = list(open_dataset("stare", args.stare, split="all"))
    real20 = items_from_dataset("drive", args.drive, "train")
    real4 = [it for it in real20 if it.id in SCARCE_IDS]
    gan20, gan4 = load_generator(args.gan), load_generator(args.gan_scarce)
    for name, ckpt in (("gan", gan20), ("gan_scarce", gan4)):
        path = Path(ckpt.path)
        cfg = json.loads((path.parent / "config.json").read_text()) if (path.parent / "config.json").exists() else {}
        results.setdefault("generators", {})[name] = {
            "file": str(path), "iteration": ckpt.iteration, "dataset": ckpt.dataset,
            "config": ckpt.config.to_dict(), "train_seconds_from_file_times": (
                round(path.stat().st_mtime - (path.parent / "config.json").stat().st_mtime, 1)
                if cfg else None)}

    # ---- 1. quality of the pairs (pairing Dice under the recipe's fine-tuned SAM)
    if "quality" not in results and not args.no_quality and not args.summary_only:
        seg_model = load_sam(model_type="lite_medsam", device="cpu", finetuned=args.segmenter)
        seg_model.encoder_precision = args.precision
        segment = _sam_segment_fn(seg_model, cache)
        results["quality"] = {}
        for name, ckpt, samples in (("gan", gan20, list(drive_train)), ("gan_scarce", gan4, scarce_train)):
            real = real_reference(samples, ckpt, n=args.quality_n, seed=0)
            report, arrays = quality_report(ckpt, real, n=args.quality_n, seed=0, segment=segment,
                                            segmenter_name="LiteMedSAM fine-tuned (recipe)", return_arrays=True)
            report.pop("colour_histograms", None)
            report["generated"].pop("pairing_dice_per_image", None)
            report["real"].pop("pairing_dice_per_image", None)
            g, r = report["generated"]["pairing_dice"]["mean"], report["real"]["pairing_dice"]["mean"]
            report["pairing_dice_ratio_generated_to_real"] = g / r if r else None
            results["quality"][name] = report
            _grid_png(out / f"grid_{name}_generated.png", arrays.gen_images, arrays.gen_masks)
            _grid_png(out / f"grid_{name}_real.png", arrays.real_images, arrays.real_masks)
            print(f"quality {name}: pairing Dice generated {g:.3f}, real {r:.3f}, "
                  f"shuffled {report['real_shuffled_pairing_dice']['mean']:.3f}", flush=True)
            save()
        del seg_model

    # ---- 2. synthetic pools (generated once; each seed draws its subset)
    n_real20 = _tiles_of(real20, 256, 32)
    n_real4 = _tiles_of(real4, 256, 32)
    pools: dict[str, list[Any]] = {}

    def pool(name: str) -> list[Any]:  # generated on first use, once per script run
        if name not in pools:
            if name == "gan":
                pools[name], _ = _synthetic_pool(gan20, drive_train, n_real20, seed=1000)
            elif name == "gan20_scarce_masks":
                pools[name], _ = _synthetic_pool(gan20, scarce_train, n_real4, seed=1002)
            else:
                pools[name], _ = _synthetic_pool(gan4, scarce_train, 3 * n_real4, seed=1001)
            results.setdefault("tiles", {})[f"pool_{name}"] = len(pools[name])
        return pools[name]

    results.setdefault("tiles", {}).update({"real20": n_real20, "real4": n_real4})

    def draw(name: str, k: int, seed: int) -> list[Any]:
        items = pool(name)
        picks = np.random.default_rng([seed, 77]).permutation(len(items))[:k]
        return [items[int(i)] for i in sorted(picks)]

    # In order of importance: the scarce case the method is about first.
    rows = {
        "real 4": lambda s: real4,
        "real 4 + GAN 100 %": lambda s: real4 + draw("gan_scarce", n_real4, s),
        "real 20": lambda s: real20,
        "real 20 + GAN 100 %": lambda s: real20 + draw("gan", n_real20, s),
        "real 20 + GAN 50 %": lambda s: real20 + draw("gan", n_real20 // 2, s),
        "GAN only": lambda s: draw("gan", n_real20, s),
        "real 4 + GAN 300 %": lambda s: real4 + draw("gan_scarce", 3 * n_real4, s),
        # Not a clean scarce setting: this GAN learnt its appearance from all 20 training images;
        # its masks here are warped patches of the 4 scarce images only.
        "real 4 + GAN-20 100 %": lambda s: real4 + draw("gan20_scarce_masks", n_real4, s),
    }
    chosen = [] if args.summary_only else (args.rows or list(rows))
    results["protocol"] = {
        "segmenter": "LiteMedSAM (bundled), decoder-only, BSD + BCE, embedding-only fusion (pixel branch 0)",
        "encoder_precision": args.precision, "steps": args.steps, "batch": 8, "views": 1, "tile": 256, "overlap": 32, "seeds": args.seeds,
        "test": {"DRIVE": "20 test images, FOV, pooled, 1st annotator", "STARE": "20 images, labels-ah, computed FOV"},
        "scarce_images": list(SCARCE_IDS), "threshold": 0.5}
    save()
    for row in chosen:
        for seed in args.seeds:
            key = f"{row} | seed {seed}"
            if key in results["runs"]:
                continue
            items = rows[row](seed)
            start = time.perf_counter()
            model = load_sam(model_type="lite_medsam", device="cpu")
            model.encoder_precision = args.precision
            config = FinetuneConfig(epochs=1000, max_steps=args.steps, n_views=1, val_fraction=0.0, device="cpu",
                                    cache_dir=str(cache_dir), seed=seed, pixel_branch=0,
                                    embedding_precision=args.precision)
            run_dir = out / "runs" / row.replace(" ", "").replace("%", "pc").replace("+", "_") / f"seed{seed}"
            train(model, items, [], config, run_dir)
            train_s = time.perf_counter() - start
            model.eval()
            metrics = _evaluate(model, cache, {"DRIVE": drive_test, "STARE": stare})
            results["runs"][key] = {"row": row, "seed": seed, "n_items": len(items),
                                    "n_synthetic": sum(it.source == "synthetic" for it in items),
                                    "train_seconds": round(train_s, 1),
                                    "seconds": round(time.perf_counter() - start, 1), **metrics}
            print(json.dumps(results["runs"][key]), flush=True)
            save()

    # ---- 3. summary: mean ± sd over seeds, paired differences against the real-only row
    summary = {}
    table_order = ["real 20", "real 20 + GAN 50 %", "real 20 + GAN 100 %", "GAN only",
                   "real 4", "real 4 + GAN 100 %", "real 4 + GAN 300 %", "real 4 + GAN-20 100 %"]
    for row in table_order:
        runs = [r for r in results["runs"].values() if r["row"] == row]
        if not runs:
            continue
        base_row = "real 4" if row.startswith("real 4") else "real 20"
        entry: dict[str, Any] = {"n_seeds": len(runs)}
        for ds in ("DRIVE", "STARE"):
            for metric in ("auc", "f1"):
                vals = [r[ds][metric] for r in sorted(runs, key=lambda r: r["seed"])]
                entry[f"{ds}_{metric}"] = _summary(vals)
                if row != base_row:
                    base = {r["seed"]: r[ds][metric] for r in results["runs"].values() if r["row"] == base_row}
                    diffs = [r[ds][metric] - base[r["seed"]] for r in runs if r["seed"] in base]
                    if diffs:
                        base_sd = _summary(list(base.values()))["sd"]
                        entry[f"{ds}_{metric}_paired_diff"] = {
                            **_summary(diffs), "all_positive": all(d > 0 for d in diffs),
                            "beyond_seed_spread": statistics.fmean(diffs) > base_sd and all(d > 0 for d in diffs)}
        summary[row] = entry
    results["summary"] = summary
    save()
    print("| rows | DRIVE AUC | DRIVE F1 | STARE AUC | STARE F1 | Δ DRIVE AUC | Δ DRIVE F1 | Δ STARE AUC |")
    print("|---|---|---|---|---|---|---|---|")
    for row, e in summary.items():
        def ms(k: str) -> str:
            return f"{e[k]['mean']:.4f} ± {e[k]['sd']:.4f}"

        def d(k: str) -> str:
            v = e.get(k)
            return "—" if v is None else f"{v['mean']:+.4f} ± {v['sd']:.4f}"

        print(f"| {row} ({e['n_seeds']} seeds) | {ms('DRIVE_auc')} | {ms('DRIVE_f1')} | {ms('STARE_auc')} | {ms('STARE_f1')} | "
              f"{d('DRIVE_auc_paired_diff')} | {d('DRIVE_f1_paired_diff')} | {d('STARE_auc_paired_diff')} |")


if __name__ == "__main__":
    main()
