"""Benchmark of the SAM engine with a vit_b-SHAPED random-weight model (no download).

Measures, side by side in one run, on one device:

1. embedding cache: first ``Segmenter.segment`` of an image (encoder + decoder)
   vs a second call on the same image with a new box (decoder only) -> speed-up
   ratio; the same prompts again (memoised, nothing decoded) are reported too;
2. batched decoding: 16 boxes in one ``RetsamSam.decode`` call (all in one pass, and
   in passes of the Segmenter's default size) vs 16 one-box calls;
3. plugin overhead: ``RetsamSam.decode`` (one box) vs a bare segment-anything
   call (``prompt_encoder`` + ``mask_decoder(multimask_output=False)``), with
   the untrained (identity) fusion block and with a trained (non-zero) one;
4. peak resident memory of vit_b inference (``resource.getrusage`` maxrss);
5. tiled (512 px windows, 64 px overlap) vs whole-image time per image.

Compared pairs (2, 3) are timed interleaved and the ratio is the median of the
per-pair ratios, so load changes on a shared machine hit both sides.

Random weights give meaningless masks but the same arithmetic and timing as the
released checkpoint. Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_sam_engine.py [--size 584x565] [--device cpu]
        [--repeats 5] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time


def _rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def _timed(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _paired(fn_a, fn_b, repeats: int, sync) -> tuple[float, float, float]:
    """Interleaved timing of two functions (a, b, a, b, ...): medians and the median of b/a.

    Interleaving keeps load changes on a shared machine from landing on one side only.
    """
    times_a, times_b, ratios = [], [], []
    for _ in range(repeats):
        pair = []
        for fn in (fn_a, fn_b):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            pair.append(time.perf_counter() - start)
        times_a.append(pair[0])
        times_b.append(pair[1])
        ratios.append(pair[1] / pair[0])
    return statistics.median(times_a), statistics.median(times_b), statistics.median(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="584x565", help="image HxW (default: DRIVE's 584x565)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--skip-tiled", action="store_true", help="skip the (slow) tiled run")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args()

    import numpy as np
    import torch

    from napari_retsam.data import synthetic_fundus
    from napari_retsam.sam import Segmenter, build_sam, select_device
    from napari_retsam.sam.preprocess import prepare_image

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    height, width = (int(v) for v in args.size.lower().split("x"))
    image = synthetic_fundus(seed=0, size=max(height, width)).image[:height, :width]
    rss_start = _rss_mib()
    model = build_sam("vit_b", seed=0).to(device).eval()
    rss_model = _rss_mib()
    out: dict[str, object] = {
        "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "image": f"{height}x{width}",
        "model": "vit_b-shaped, random weights",
    }

    # 1. first vs second segmentation (whole-image mode)
    box = [[20.0, 20.0, width - 20.0, height - 20.0]]
    segmenter = Segmenter(model)
    sync()
    t0 = time.perf_counter()
    first = segmenter.segment(image, box, tile=0)
    sync()
    t_first = time.perf_counter() - t0
    rss_infer = _rss_mib()
    shift = iter(range(1, 10**6))

    def reprompt():  # a new box each call: the embedding (and fused embedding) cached, the decoder runs
        k = float(next(shift) % 16)
        result = segmenter.segment(image, [[20.0 + k, 20.0 + k, width - 20.0 - k, height - 20.0 - k]], tile=0)
        assert result.n_embedded == 0 and result.n_decoded == 1

    t_second = _timed(reprompt, args.repeats, sync)
    t_rerun = _timed(lambda: segmenter.segment(image, box, tile=0), args.repeats, sync)  # memoised: nothing decoded
    assert first.n_embedded == 1
    out.update(first_segment_s=t_first, second_segment_s=t_second, cache_speedup=t_first / t_second,
               same_prompts_again_s=t_rerun)

    # 2. batched 16 boxes vs 16 single calls, on one cached embedding
    prepared = prepare_image(image, model.img_size)
    with torch.no_grad():
        emb = model.embed(prepared.tensor[None].to(device))
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 700, size=(16, 2))
    boxes = torch.tensor(np.hstack([xy, xy + rng.uniform(50, 300, size=(16, 2))]), dtype=torch.float32, device=device)

    def batched():
        with torch.no_grad():
            model.decode(emb, boxes[None])

    default_chunk = Segmenter(model).chunk_size  # the Segmenter's passes

    def batched_chunked():
        with torch.no_grad():
            model.decode(emb, boxes[None], chunk_size=default_chunk)

    def singles():
        with torch.no_grad():
            for k in range(16):
                model.decode(emb, boxes[k : k + 1][None])

    batched()
    t_batched = _timed(batched, args.repeats, sync)
    t_singles, t_batched, r_batched = _paired(singles, batched, args.repeats, sync)
    _, t_chunked, r_chunked = _paired(singles, batched_chunked, args.repeats, sync)
    out.update(decode_16_batched_s=t_batched, decode_chunk=default_chunk, decode_16_batched_chunked_s=t_chunked,
               decode_16_single_s=t_singles, batch_speedup=1.0 / r_batched, batch_chunked_speedup=1.0 / r_chunked)

    # 3. overhead over bare segment-anything (one box)
    sam = model.sam
    one = boxes[:1]

    def bare():
        with torch.no_grad():
            sparse, dense = sam.prompt_encoder(points=None, boxes=one, masks=None)
            sam.mask_decoder(image_embeddings=emb, image_pe=sam.prompt_encoder.get_dense_pe(),
                             sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                             multimask_output=False)

    def ours():
        with torch.no_grad():
            model.decode(emb, one[None])

    bare()
    ours()
    reps = max(args.repeats * 7, 15)
    t_bare, t_ours, r_ours = _paired(bare, ours, reps, sync)
    with torch.no_grad():
        model.fusion.conv2.weight.normal_(0, 1e-3)  # a "trained" fusion block: its convolutions run
    _, t_ours_fused, r_ours_fused = _paired(bare, ours, reps, sync)
    # the Segmenter memoises the fused embedding: a re-prompt of a cached image with a trained block
    segmenter.segment(image, box, tile=0)  # fuses once for the new weights
    t_segment_fused = _timed(reprompt, args.repeats, sync)
    out["second_segment_trained_fusion_s"] = t_segment_fused
    model.fusion.reset_identity()
    out.update(bare_decoder_s=t_bare, plugin_decode_s=t_ours, plugin_decode_trained_fusion_s=t_ours_fused,
               overhead_pct=100 * (r_ours - 1), overhead_trained_fusion_pct=100 * (r_ours_fused - 1))

    # 4. memory
    out.update(rss_before_model_mib=rss_start, rss_after_model_mib=rss_model, rss_peak_inference_mib=rss_infer,
               inference_extra_mib=rss_infer - rss_model)
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20

    # 5. tiled vs whole image (fresh caches: encoder included)
    if not args.skip_tiled:
        sync()
        t0 = time.perf_counter()
        tiled = Segmenter(model).segment(image, box, tile=512, overlap=64)
        sync()
        t_tiled = time.perf_counter() - t0
        out.update(tiled_s=t_tiled, tiled_windows=len(tiled.tiles), whole_image_s=t_first,
                   tiled_over_whole=t_tiled / t_first)

    width_key = max(len(k) for k in out)
    for key, value in out.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width_key}}  {shown}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
