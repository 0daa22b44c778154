"""Re-segmentation of an embedded image: what each kind of second call costs against the first.

On one DRIVE image with the default settings (bundled LiteMedSAM or a
fine-tuned checkpoint, 256-px windows, default precision), in one process,
over ``--repeats`` rounds with fresh caches (medians):

* first      — a fresh Segmenter: every window embedded, then decoded (the FOV box);
* decoder    — a new Segmenter over the same embedding cache (what a new model or a new
               process with a warm disk cache meets): no encoder pass, the fusion block
               and every (window, box) prompt run again;
the widget's sequence, in the first call's Segmenter (the widget keeps it while the model
stays the same; fused embeddings and decoded prompts are memoised):
* moved      — the FOV box moved in by 4 px on every side (a live edit of a whole-image
               box): every window whose part of the box changed is decoded again;
* small box  — a 96-px box (upper-left quadrant of the FOV) drawn on the embedded image:
               only the window it touches;
* small box, new Segmenter — the same in a new Segmenter (fusion of that window again);
* dragged    — the FOV box with its right edge moved 8 px: only the windows whose
               part of the box changed are decoded, the rest come from the memo;
* re-run     — the same prompts again: nothing to decode.

    python benchmarks/bench_resegment.py --image ../shared/data/DRIVE/test/images/01_test.tif \
        --finetuned runs/drive/best.pt --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--finetuned", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from napari_retsam.data import compute_fov, mask_bounding_box, read_image
    from napari_retsam.options import DEFAULT_OVERLAP, DEFAULT_TILE
    from napari_retsam.sam import EmbeddingCache, Segmenter, load_sam

    image = read_image(args.image)
    fov_box = mask_bounding_box(compute_fov(image)).astype(float)
    dragged = fov_box.copy()
    dragged[2] -= 8
    moved = fov_box + np.array([4.0, 4.0, -4.0, -4.0])
    cx = fov_box[0] + 0.25 * (fov_box[2] - fov_box[0])  # a vessel prompt in the upper-left quadrant
    cy = fov_box[1] + 0.25 * (fov_box[3] - fov_box[1])
    small = np.array([cx - 48, cy - 48, cx + 48, cy + 48])
    model = load_sam(model_type="lite_medsam", device=args.device, finetuned=args.finetuned).eval()

    def call(segmenter, box):
        start = time.perf_counter()
        result = segmenter.segment(image, box[None], tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP)
        return time.perf_counter() - start, result

    names = ("first", "decoder", "moved", "small box", "small box, new Segmenter", "dragged", "re-run")
    rows: dict[str, list[float]] = {k: [] for k in names}
    counts: dict[str, tuple[int, int]] = {}
    for _ in range(args.repeats):
        cache = EmbeddingCache()
        first = Segmenter(model, cache=cache)
        for name, segmenter, box in (("first", first, fov_box), ("decoder", Segmenter(model, cache=cache), fov_box),
                                     ("moved", first, moved), ("small box", first, small),
                                     ("small box, new Segmenter", Segmenter(model, cache=cache), small),
                                     ("dragged", first, dragged), ("re-run", first, dragged)):
            seconds, result = call(segmenter, box)
            rows[name].append(seconds)
            counts[name] = (result.n_embedded, result.n_decoded)
    medians = {k: statistics.median(v) for k, v in rows.items()}
    print(f"| call ({image.shape[1]}×{image.shape[0]}, {args.device}, {args.threads} threads, median of {args.repeats}) "
          "| encoder passes | prompts decoded | s | first / this |")
    print("|---|---|---|---|---|")
    for name, seconds in medians.items():
        embedded, decoded = counts[name]
        print(f"| {name} | {embedded} | {decoded} | {seconds:.3f} | {medians['first'] / seconds:.1f}× |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"image": args.image, "finetuned": args.finetuned, "threads": args.threads, "device": args.device,
                       "repeats": args.repeats, "median_s": medians,
                       "counts": {k: {"embedded": e, "decoded": d} for k, (e, d) in counts.items()}}, fh, indent=2)


if __name__ == "__main__":
    main()
