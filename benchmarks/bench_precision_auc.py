"""Does bf16 (or another tiling) cost vessel AUC? Side by side on DRIVE test.

Segments the DRIVE test images with a fine-tuned checkpoint once per setting
(encoder precision × tile size; default tiling 256/32 and fp32 first), FOV box
prompt, and reports the pooled FOV AUC and F1 at 0.5, the difference to the
first setting, and the segmentation time per image (embedding included; each
setting has its own embedding cache).

    python benchmarks/bench_precision_auc.py --root ../shared/data/DRIVE --finetuned runs/drive/best.pt \
        --settings fp32:256 bf16:256 [--limit 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--finetuned", required=True)
    parser.add_argument("--settings", nargs="+", default=["fp32:256", "bf16:256"],
                        help="PRECISION:TILE pairs (overlap = tile/8)")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (on CUDA the reduced-precision settings autocast to fp16: sam/device.py)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from napari_retsam.data import mask_bounding_box, open_dataset
    from napari_retsam.metrics import evaluate_set
    from napari_retsam.sam import EmbeddingCache, Segmenter, load_sam

    samples = list(open_dataset("drive", args.root, "test"))
    if args.limit:
        samples = samples[: args.limit]
    model = load_sam(finetuned=args.finetuned, device=args.device)
    rows = []
    for setting in args.settings:
        precision, tile = setting.split(":")
        tile = int(tile)
        model.encoder_precision = precision
        segmenter = Segmenter(model, cache=EmbeddingCache())
        start = time.perf_counter()
        probs = [segmenter.segment(s.image, mask_bounding_box(s.fov)[None], tile=tile, overlap=max(tile // 8, 0)).prob
                 for s in samples]
        seconds = (time.perf_counter() - start) / len(samples)
        pooled = evaluate_set(probs, [s.gold for s in samples], [s.fov for s in samples]).pooled
        rows.append({"precision": precision, "tile": tile, "auc": pooled.auc, "f1": pooled.f1,
                     "s_per_image": seconds})
    base = rows[0]
    print(f"| precision | tile | AUC | ΔAUC | F1 | ΔF1 | s/image |  ({len(samples)} DRIVE test images)")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['precision']} | {r['tile']} | {r['auc']:.4f} | {r['auc'] - base['auc']:+.4f} | {r['f1']:.4f} | "
              f"{r['f1'] - base['f1']:+.4f} | {r['s_per_image']:.1f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n_images": len(samples), "device": args.device, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
