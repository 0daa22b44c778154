"""GAN benchmarks: training speed and memory at 256 / 512 px, and a short real DRIVE run.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/bench_gan.py speed [--iters 5] [--device cpu]
    OMP_NUM_THREADS=1 python benchmarks/bench_gan.py drive --root /path/to/DRIVE \
        [--size 128] [--minutes 10] [--out runs/bench_gan_drive] [--docs docs/gan]

``speed`` trains the default architecture (g_channels 32, d_channels 64, K = 3,
batch 1) on random pairs, each size in a fresh subprocess, and prints
iterations per second, the peak resident memory of that process (ru_maxrss)
and, on CUDA, the peak allocated GPU memory; then the 256/512 speed ratio.

``drive`` trains on the 20 DRIVE training images for a bounded wall-clock time
(the loop stops cooperatively and writes its checkpoint), then writes into
``--docs``: ``loss_curves.png``, ``samples.png`` (8 generated pairs, image
above mask), ``real_pairs.png`` (8 prepared real pairs for comparison),
``report.png`` and ``report.json`` (:mod:`napari_retsam.gan.report`), each
name prefixed with ``--prefix``. With ``--mode conditional`` the sample grid
shows images generated for warped copies of real annotations
(:func:`napari_retsam.gan.masks.augment_masks`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _speed_one(size: int, iters: int, device: str) -> dict:
    import torch

    from napari_retsam.gan.config import GanConfig
    from napari_retsam.gan.data import PreparedPairs
    from napari_retsam.gan.train import GanTrainer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    fov = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 < (size / 2) ** 2
    pairs = PreparedPairs(rng.integers(0, 255, (2, size, size, 3), dtype=np.uint8),
                          (rng.random((2, size, size)) > 0.9) & fov, np.stack([fov, fov]), ["a", "b"])
    cfg = GanConfig(size=size, iterations=iters + 1, batch_size=1, sample_every=0, checkpoint_every=10**9)
    import tempfile

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as out:
        trainer = GanTrainer(cfg, pairs, out, device=device)
        n_g = sum(p.numel() for p in trainer.G.parameters())
        n_d = sum(p.numel() for p in trainer.D.parameters())
        trainer.train_step()  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(iters):
            trainer.train_step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"size": size, "iters": iters, "seconds": dt, "it_per_s": iters / dt,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_mib": rss0, "peak_gpu_mib": gpu, "generator_params": n_g, "discriminator_params": n_d,
            "threads": torch.get_num_threads(), "device": device}


def cmd_speed(args: argparse.Namespace) -> None:
    rows = []
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "_speed_one", str(size), str(args.iters), args.device],
                             check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['size']:>4} px  {r['it_per_s']:.3f} it/s  ({r['seconds'] / r['iters']:.2f} s/it)  "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB (before training {r['rss_before_mib']:.0f} MiB)"
              + (f"  peak GPU {r['peak_gpu_mib']:.0f} MiB" if r["peak_gpu_mib"] is not None else "")
              + f"  G {r['generator_params'] / 1e6:.2f} M, D {r['discriminator_params'] / 1e6:.2f} M params",
              flush=True)
    if len(rows) == 2:
        print(f"speed ratio {rows[0]['size']}/{rows[1]['size']} px: {rows[0]['it_per_s'] / rows[1]['it_per_s']:.2f}×")
    print(json.dumps(rows))


def _save_fig(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    path.write_bytes(buffer.getvalue())


def cmd_drive(args: argparse.Namespace) -> None:
    import torch
    from matplotlib.figure import Figure

    from napari_retsam.data import open_dataset
    from napari_retsam.gan.config import GanConfig
    from napari_retsam.gan.data import prepare_pairs
    from napari_retsam.gan.imaging import sample_grid, write_png
    from napari_retsam.gan.report import quality_report, report_figure, report_summary_lines
    from napari_retsam.gan.sample import generate
    from napari_retsam.gan.train import GanTrainer, read_loss_log

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t_start = time.perf_counter()
    ds = open_dataset("drive", args.root, "train")
    pairs = prepare_pairs(ds, args.size)
    print(f"prepared {len(pairs)} DRIVE training pairs at {args.size} px in {time.perf_counter() - t_start:.1f} s")
    cfg = GanConfig(size=args.size, iterations=args.max_iterations, batch_size=args.batch_size,
                    sample_every=args.sample_every, checkpoint_every=args.checkpoint_every, seed=0,
                    g_channels=args.g_channels, d_channels=args.d_channels, mode=args.mode)
    out = Path(args.out)
    resume = out / "last.pt" if args.resume and (out / "last.pt").exists() else None
    trainer = GanTrainer(cfg, pairs, out, resume=resume, dataset_info={"name": "drive", "split": "train",
                                                                      "n_images": len(pairs)})
    deadline = time.perf_counter() + args.minutes * 60
    t0 = time.perf_counter()
    it0 = trainer.iteration

    def progress(done: int, total: int, msg: str) -> None:
        if done % 100 == 0:
            print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    from napari_retsam.progress import Cancelled

    try:
        trainer.run(progress=progress, should_stop=lambda: time.perf_counter() > deadline)
    except Cancelled:  # the time limit: last.pt is written, the run continues with --resume
        pass
    train_s = time.perf_counter() - t0
    iters = trainer.iteration - it0
    print(f"trained {iters} iterations in {train_s:.0f} s ({iters / train_s:.2f} it/s); total {trainer.iteration}")

    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    pre = args.prefix
    log = read_loss_log(out / "losses.jsonl")
    it = np.array([r["iteration"] for r in log])
    fig = Figure(figsize=(7, 3), dpi=80)
    ax = fig.subplots()
    w = max(1, len(log) // 50)
    for key, label in (("d_loss", "L_D"), ("g_gan", "L_G,GAN"), ("g_fm", "L_FM")):
        v = np.array([r[key] for r in log])
        smooth = np.convolve(v, np.ones(w) / w, mode="valid")
        ax.plot(it[w - 1:], smooth, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"loss (moving mean of {w})")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(f"DRIVE train, {args.mode}, {args.size} px, {trainer.iteration} iterations, CPU")
    fig.tight_layout()
    _save_fig(fig, docs / f"{pre}loss_curves.png")

    gen_path = out / "generator_last.pt"
    if args.mode == "conditional":
        from napari_retsam.gan.checkpoint import load_generator
        from napari_retsam.gan.masks import augment_masks

        # new masks: the first 8 real annotations, randomly flipped/rotated and elastically warped
        fov = load_generator(gen_path).fov_template
        gen = generate(gen_path, 8, seed=0, masks=augment_masks(pairs.masks[:8], 0, fov=fov))
    else:
        gen = generate(gen_path, 8, seed=0)
    write_png(docs / f"{pre}samples.png", sample_grid(gen.images, gen.masks))
    if not (docs / "real_pairs.png").exists():
        write_png(docs / "real_pairs.png", sample_grid(pairs.images[:8], pairs.masks[:8]))
    t1 = time.perf_counter()
    report = quality_report(gen_path, pairs, n=len(pairs), seed=0)
    print(f"quality report in {time.perf_counter() - t1:.1f} s")
    report["benchmark"] = {"size": args.size, "iterations": trainer.iteration, "train_seconds": round(train_s, 1),
                           "it_per_s": round(iters / train_s, 3), "threads": torch.get_num_threads(),
                           "command": " ".join(sys.argv)}
    (docs / f"{pre}report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    _save_fig(report_figure(report), docs / f"{pre}report.png")
    for line in report_summary_lines(report):
        print(line)
    for p in sorted(docs.glob("*.png")):
        print(f"{p}: {p.stat().st_size / 1024:.0f} KiB")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_speed_one":
        print(json.dumps(_speed_one(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    sp.add_argument("--iters", type=int, default=5)
    sp.add_argument("--device", default="cpu")
    dp = sub.add_parser("drive")
    dp.add_argument("--root", default="/work/shared/data/DRIVE")
    dp.add_argument("--size", type=int, default=128)
    dp.add_argument("--minutes", type=float, default=10.0)
    dp.add_argument("--max-iterations", type=int, default=14_000)
    dp.add_argument("--batch-size", type=int, default=1)
    dp.add_argument("--g-channels", type=int, default=32)
    dp.add_argument("--d-channels", type=int, default=64)
    dp.add_argument("--sample-every", type=int, default=250)
    dp.add_argument("--checkpoint-every", type=int, default=250)
    dp.add_argument("--resume", action="store_true")
    dp.add_argument("--mode", default="paired", choices=["paired", "conditional"])
    dp.add_argument("--prefix", default="", help="file-name prefix of the docs outputs")
    dp.add_argument("--out", default="runs/bench_gan_drive")
    dp.add_argument("--docs", default="docs/gan")
    args = parser.parse_args()
    {"speed": cmd_speed, "drive": cmd_drive}[args.cmd](args)


if __name__ == "__main__":
    main()
