"""The mask decoder alone: segment-anything's modules as they are vs the project's re-stated path.

Real LiteMedSAM weights (a fine-tuned checkpoint adds the fusion block's pixel
skip, as in the recipe's models), fixed random embeddings, in one process,
rounds interleaved, medians:

* ``whole image``: one box per window over the 9 windows of a DRIVE image
  (565 × 584 at 256-px windows): what a whole-image re-segmentation decodes;
* ``16 boxes, one window``: 16 prompts on one window.

Each case is decoded in one call with ``--chunks`` prompts per pass, and as one
call per prompt ("calls").

Every row reports the largest difference to the reference's logits.

    python benchmarks/bench_decoder.py --finetuned runs/drive/best.pt --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finetuned", default=None, help="a project checkpoint (adds the fusion skip)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from napari_retsam.sam import load_sam
    from napari_retsam.sam.decoder import decode_prompts
    from napari_retsam.sam.two_way import reference_masks

    model = load_sam(model_type="lite_medsam", device=args.device, finetuned=args.finetuned).eval()
    sam, device = model.sam, model.device
    g = torch.Generator().manual_seed(0)
    c = sam.prompt_encoder.embed_dim
    h, w = sam.prompt_encoder.image_embedding_size
    windows = torch.randn(9, c, h, w, generator=g).to(device)
    skip = torch.randn(9, c // 8, 4 * h, 4 * w, generator=g).to(device) if model.uses_pixels else None
    whole = torch.tensor([[8.0, 8.0, 247.0, 247.0]]).repeat(9, 1).to(device)
    corner = torch.rand(16, 2, generator=g) * 160
    many = torch.cat([corner, corner + 24 + torch.rand(16, 2, generator=g) * 64], dim=1).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def ours(boxes, index, chunk):
        if chunk == "calls":  # one decode_prompts call per prompt
            return torch.cat([decode_prompts(sam, windows, boxes[n:n + 1], index[n:n + 1], skip=skip)
                              for n in range(len(boxes))])
        return decode_prompts(sam, windows, boxes, index, chunk_size=chunk, skip=skip)

    def reference(boxes, index, chunk):  # the modules have no passes: one call per pass
        step = 1 if chunk == "calls" else chunk
        parts = [reference_masks(sam, windows, boxes[s:s + step], index[s:s + step], 1, skip)[0]
                 for s in range(0, len(boxes), step)]
        return torch.cat(parts)

    cases = {"whole image (9 windows × 1 box)": (whole, torch.arange(9, device=device)),
             "16 boxes, one window": (many, torch.zeros(16, dtype=torch.long, device=device))}
    rows: dict[str, list[float]] = {}
    diffs: dict[str, float] = {}
    with torch.inference_mode():
        truth = {name: reference(b, i, len(b)) for name, (b, i) in cases.items()}
        for _ in range(args.repeats):
            for name, (boxes, index) in cases.items():
                for label, fn in (("segment-anything modules", reference), ("project (two_way)", ours)):
                    for chunk in [*args.chunks, "calls"]:
                        key = f"{name} | {label} | {chunk}"
                        sync()
                        start = time.perf_counter()
                        out = fn(boxes, index, chunk)
                        sync()
                        rows.setdefault(key, []).append(time.perf_counter() - start)
                        diffs[key] = float((out - truth[name]).abs().max())
    medians = {k: statistics.median(v) for k, v in rows.items()}
    print(f"| case ({args.device}, {args.threads} threads, median of {args.repeats}) | path | prompts per pass "
          "(calls: one call per prompt) "
          "| s | per prompt (ms) | vs reference, same chunk | max |Δ logit| |")
    print("|---|---|---|---|---|---|---|")
    for key, seconds in medians.items():
        name, label, chunk = key.split(" | ")
        n = len(cases[name][0])
        ref = medians[f"{name} | segment-anything modules | {chunk}"]
        print(f"| {name} | {label} | {chunk} | {seconds:.3f} | {1000 * seconds / n:.1f} | {ref / seconds:.2f}× "
              f"| {diffs[key]:.1e} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"finetuned": args.finetuned, "threads": args.threads, "device": args.device,
                       "repeats": args.repeats, "median_s": medians, "max_abs_diff": diffs}, fh, indent=2)


if __name__ == "__main__":
    main()
