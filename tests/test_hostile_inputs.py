"""Hostile inputs, table-driven (issue 12): every row must end in exit code 2, exactly one
stderr line ``retsam: error: ...``, no traceback, and no file of the workspace created,
changed or removed.

Adding a row
------------
Append a :class:`Case` to :data:`CASES`. ``argv`` is the command line with ``{name}``
placeholders for the files of the shared workspace (:func:`ws`, built once per module:
see ``WORKSPACE`` below for what is there; add a file by extending :func:`_build_workspace`)
and ``{new}``, a fresh empty folder per row for outputs that must not appear. ``message`` is a
substring the error line must contain. ``forbid`` names functions (``module:attribute``)
that must not run (the check has to come before that work). ``hold`` names workspace
folders another live process holds as a run folder while the row runs (concurrency on one
``--out``). Classes: ``argument``, ``image``, ``folder``, ``concurrency``, ``input=output``,
``checkpoint`` (crafted files, built from real tiny runs in :func:`_build_crafted`). Bad
embedding-cache entries are recomputed (exit 0, one warning), so they are tested in
``tests/test_checkpoint_integrity.py``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_retsam.cli.main import main

#: What :func:`_build_workspace` puts in the workspace (placeholder -> path relative to it).
WORKSPACE = {
    "ws": ".",
    "image": "a.png",                  # 64×64 synthetic fundus
    "fov": "fov.png",                  # its FOV mask
    "link": "link.png",                # symbolic link to a.png
    "ckpt": "sam_tiny.pth",            # official-style tiny SAM state dict
    "data": "data",                    # generic folder dataset, 2 samples (images/, masks/, fov/)
    "bomb": "bomb.png",                # PNG header declaring 20000×20000 (a few bytes on disk)
    "bomb_mid": "bomb_mid.png",        # 13000×12000: between our limit and Pillow's
    "bomb_npy": "bomb.npy",            # .npy header declaring 100000×100000×3
    "junk": "junk.png",                # not an image
    "bomb_data": "bomb_data",          # folder dataset whose image is a bomb
    "ft_earlier": "ft_earlier",        # an earlier fine-tuning run (last.pt, best.pt, metrics.jsonl)
    "gan_earlier": "gan_earlier",      # an earlier GAN run
    "busy": "busy",                    # held by another process in rows with hold=("busy",)
    "a_file": "a_file",                # a plain file where a folder is expected
    "gen": "gen.pt",                   # stands for a generator checkpoint (never loaded: refused before)
    "demo_out": "demo_out",            # a demo output folder holding gan_samples/ (a dataset)
    # crafted checkpoints (built from real tiny runs by _build_crafted)
    "ft_last": "crafted/ft_run/last.pt",                # a real last.pt of a 1-step tiny fine-tuning run
    "ft_classes": "crafted/ft_num_classes_abc.pt",      # fine-tune last.pt, num_classes='abc'
    "ft_noconfig": "crafted/ft_no_training_config.pt",  # fine-tune last.pt without training.config
    "ft_step_huge": "crafted/ft_step_1e12.pt",          # training.step = 10**12
    "ft_step_neg": "crafted/ft_step_-5.pt",             # training.step = -5
    "ft_step_beyond": "crafted/ft_step_1000.pt",        # step = total_steps = 1000: beyond a 1-step run
    "ft_nan": "crafted/ft_nan_decoder.pt",              # a NaN in a fine-tuned decoder weight
    "ft_nan_optim": "crafted/ft_nan_optimizer.pt",      # a NaN in the saved optimizer state
    "nan_ckpt": "crafted/sam_tiny_nan.pth",             # official-style state dict with an inf weight
    "fake_official": "crafted/sam_vit_b_01ec64.pth",    # tiny weights under the official vit_b name
    "gan_neg": "crafted/gan_last_negative_iteration.pt",   # GAN last.pt, iteration -3
    "gan_newer": "crafted/gan_generator_v2.pt",         # generator_last.pt of format_version 2
    "gan_newer_last": "crafted/gan_last_v2.pt",         # last.pt of format_version 2
    "gan_nan": "crafted/gan_generator_nan.pt",          # generator weight NaN
    # folders
    "ambiguous": "ambiguous",          # flat images/ AND train/images/
    "split_data": "split_data",        # train/ and test/ sub-folders (disjoint ids)
}


@dataclass(frozen=True)
class Case:
    kind: str
    name: str
    argv: tuple[str, ...]
    message: str
    forbid: tuple[str, ...] = ()
    hold: tuple[str, ...] = ()


BIG = str(10**23)
TINY_FT = ("--checkpoint", "{ckpt}", "--model-type", "tiny", "--device", "cpu", "--tile", "0", "--max-steps", "1")
TINY_GAN = ("--size", "16", "--scales", "1", "--iterations", "1", "--g-channels", "4", "--d-channels", "4")
GAN_DATA = ("--dataset", "folder", "--root", "{data}", "--split", "all")

CASES: list[Case] = [
    # ------------------------------------------------------------------ arguments
    Case("argument", "finetune seed overflow",
         ("finetune", "--synthetic", "{data}", "--out", "{new}/ft", *TINY_FT, "--seed", BIG), "--seed must be <=",
         forbid=("napari_retsam.training.runner:collect_items",)),
    Case("argument", "finetune negative seed",
         ("finetune", "--synthetic", "{data}", "--out", "{new}/ft", *TINY_FT, "--seed", "-1"), "--seed must be >= 0"),
    Case("argument", "gan train huge size",
         ("gan", "train", *GAN_DATA, "--out", "{new}/gan", "--size", "1048576"), "--size must be <= 2048",
         forbid=("napari_retsam.cli.gan_cmd:_open_dataset",)),
    Case("argument", "gan train seed overflow",
         ("gan", "train", *GAN_DATA, "--out", "{new}/gan", *TINY_GAN, "--seed", BIG), "seed",
         forbid=("napari_retsam.cli.gan_cmd:_open_dataset",)),
    Case("argument", "demo huge size",
         ("demo", "--smallest", "--size", "100000", "--out", "{new}/demo"), "--size must be <= 4096",
         forbid=("napari_retsam.evaluation.demo:run_demo",)),
    Case("argument", "demo seed overflow",
         ("demo", "--smallest", "--seed", BIG, "--out", "{new}/demo"), "--seed must be <=",
         forbid=("napari_retsam.evaluation.demo:run_demo",)),
    Case("checkpoint", "benchmark named --finetuned is not a checkpoint",
         ("benchmark", "--dataset", "folder", "--root", "{data}", "--split", "all", "--out", "{new}/b",
          "--checkpoint", "{ckpt}", "--model-type", "tiny", "--finetuned", "{junk}", "--skip-auto"),
         "--finetuned", forbid=("napari_retsam.baseline:frangi_probability",)),
    Case("checkpoint", "benchmark named --fusion is an official state dict",
         ("benchmark", "--dataset", "folder", "--root", "{data}", "--split", "all", "--out", "{new}/b",
          "--checkpoint", "{ckpt}", "--model-type", "tiny", "--fusion", "{ckpt}", "--skip-auto"),
         "--fusion", forbid=("napari_retsam.baseline:frangi_probability",)),
    Case("argument", "benchmark small tile",
         ("benchmark", "--dataset", "folder", "--root", "{data}", "--split", "all", "--out", "{new}/b",
          "--tile", "8"), "--tile must be 0", forbid=("napari_retsam.evaluation.benchmark:run_benchmark",)),
    Case("argument", "benchmark overlap >= tile",
         ("benchmark", "--dataset", "folder", "--root", "{data}", "--split", "all", "--out", "{new}/b",
          "--tile", "32", "--overlap", "32"), "--overlap", forbid=("napari_retsam.evaluation.benchmark:run_benchmark",)),
    Case("argument", "benchmark negative overlap",
         ("benchmark", "--dataset", "folder", "--root", "{data}", "--split", "all", "--out", "{new}/b",
          "--overlap", "-3"), "--overlap", forbid=("napari_retsam.evaluation.benchmark:run_benchmark",)),
    Case("argument", "benchmark zero auto points",
         ("benchmark", "--dataset", "folder", "--root", "{data}", "--split", "all", "--out", "{new}/b",
          "--auto-points", "0"), "--auto-points must be >= 1",
         forbid=("napari_retsam.evaluation.benchmark:run_benchmark",)),
    Case("argument", "benchmark huge auto points",
         ("benchmark", "--dataset", "folder", "--root", "{data}", "--split", "all", "--out", "{new}/b",
          "--auto-points", "100000"), "--auto-points must be <= 256",
         forbid=("napari_retsam.evaluation.benchmark:run_benchmark",)),
    # ------------------------------------------------------------------ images
    Case("image", "baseline decompression bomb",
         ("baseline", "--image", "{bomb}", "--out", "{new}/m.png"), "bomb.png is too large",
         forbid=("napari_retsam.baseline:frangi_segment",)),
    Case("image", "baseline image above the policy, below Pillow's limit",
         ("baseline", "--image", "{bomb_mid}", "--out", "{new}/m.png"), "more than the limit of 144,000,000"),
    Case("image", "baseline npy bomb",
         ("baseline", "--image", "{bomb_npy}", "--out", "{new}/m.png"), "bomb.npy is too large"),
    Case("image", "baseline not an image names the file",
         ("baseline", "--image", "{junk}", "--out", "{new}/m.png"), "junk.png: not an image file"),
    Case("image", "segment decompression bomb",
         ("segment", "--image", "{bomb}", "--out", "{new}/m.png", "--checkpoint", "{ckpt}", "--model-type", "tiny",
          "--device", "cpu"), "bomb.png is too large", forbid=("napari_retsam.sam.checkpoints:load_sam",)),
    Case("image", "data info on a dataset with a bomb",
         ("data", "info", "--dataset", "folder", "--root", "{bomb_data}", "--split", "all"), "is too large"),
    # ------------------------------------------------------------------ folders
    Case("folder", "finetune over an earlier run",
         ("finetune", "--synthetic", "{data}", "--out", "{ft_earlier}", *TINY_FT), "already holds an earlier",
         forbid=("napari_retsam.training.runner:collect_items",)),
    Case("folder", "finetune resuming elsewhere over an earlier run",
         ("finetune", "--synthetic", "{data}", "--out", "{ft_earlier}", *TINY_FT, "--resume", "{ft_last}"),
         "already holds an earlier", forbid=("napari_retsam.training.runner:collect_items",)),
    Case("folder", "gan train over an earlier run",
         ("gan", "train", *GAN_DATA, "--out", "{gan_earlier}", *TINY_GAN), "already holds an earlier",
         forbid=("napari_retsam.cli.gan_cmd:_open_dataset",)),
    Case("folder", "finetune --out is a file",
         ("finetune", "--synthetic", "{data}", "--out", "{a_file}", *TINY_FT), "a_file"),
    Case("folder", "gan train --out is a file",
         ("gan", "train", *GAN_DATA, "--out", "{a_file}", *TINY_GAN), "a_file"),
    # ------------------------------------------------------------------ concurrency on one --out
    Case("concurrency", "finetune on a folder in use",
         ("finetune", "--synthetic", "{data}", "--out", "{busy}", *TINY_FT), "is in use by pid",
         forbid=("napari_retsam.training.runner:collect_items",), hold=("busy",)),
    Case("concurrency", "gan train on a folder in use",
         ("gan", "train", *GAN_DATA, "--out", "{busy}", *TINY_GAN), "is in use by pid",
         forbid=("napari_retsam.cli.gan_cmd:_open_dataset",), hold=("busy",)),
    # ------------------------------------------------------------------ input = output
    Case("input=output", "baseline --out is --image",
         ("baseline", "--image", "{image}", "--out", "{image}"), "is the input image",
         forbid=("napari_retsam.baseline:frangi_segment",)),
    Case("input=output", "baseline --out links to --image",
         ("baseline", "--image", "{image}", "--out", "{link}"), "is the input image"),
    Case("input=output", "baseline --out via another path spelling",
         ("baseline", "--image", "{image}", "--out", "{data}/../a.png"), "is the input image"),
    Case("input=output", "baseline --prob-out is --image",
         ("baseline", "--image", "{image}", "--out", "{new}/m.png", "--prob-out", "{image}"), "is the input image"),
    Case("input=output", "baseline --out is --fov",
         ("baseline", "--image", "{image}", "--fov", "{fov}", "--out", "{fov}"), "is the input FOV mask"),
    Case("input=output", "baseline --out-dir is the dataset root (masks/ = gold)",
         ("baseline", "--dataset", "folder", "--root", "{data}", "--split", "all", "--out-dir", "{data}"),
         "dataset gold file", forbid=("napari_retsam.baseline:frangi_segment",)),
    Case("input=output", "baseline --out-dir is the dataset's images folder",
         ("baseline", "--dataset", "folder", "--root", "{data}", "--split", "all", "--out-dir", "{data}/images"),
         "outputs would mix with the inputs", forbid=("napari_retsam.baseline:frangi_segment",)),
    Case("input=output", "segment --out is --image",
         ("segment", "--image", "{image}", "--out", "{image}", "--checkpoint", "{ckpt}", "--model-type", "tiny"),
         "is the input image", forbid=("napari_retsam.sam.checkpoints:load_sam",)),
    Case("input=output", "finetune --checkpoint is an output of the run",
         ("finetune", "--synthetic", "{data}", "--out", "{ft_earlier}", "--checkpoint", "{ft_earlier}/best.pt",
          "--model-type", "tiny", "--device", "cpu", "--overwrite"), "is the input --checkpoint",
         forbid=("napari_retsam.training.runner:collect_items",)),
    Case("input=output", "gan sample export over its --mask-dir",
         ("gan", "sample", "--checkpoint", "{gen}", "--n", "2", "--out", "{data}", "--mask-dir", "{data}/masks",
          "--overwrite"), "would write over the input --mask-dir",
         forbid=("napari_retsam.gan.sample:sample_and_export",)),
    Case("input=output", "gan sample export over its --mask-dataset",
         ("gan", "sample", "--checkpoint", "{gen}", "--n", "2", "--out", "{data}", "--mask-dataset", "folder",
          "--mask-root", "{data}", "--mask-split", "all", "--overwrite"), "would write over the input dataset",
         forbid=("napari_retsam.gan.sample:sample_and_export",)),
    Case("input=output", "gan report --figure over a dataset image",
         ("gan", "report", "--checkpoint", "{gen}", *GAN_DATA, "--figure", "{data}/images/synth_000.png"),
         "is the input dataset image file", forbid=("napari_retsam.gan.checkpoint:load_generator",)),
    # ------------------------------------------------------------------ crafted checkpoints
    Case("checkpoint", "segment with num_classes='abc'",
         ("segment", "--image", "{image}", "--out", "{new}/m.png", "--checkpoint", "{ft_classes}",
          "--model-type", "tiny"), "ft_num_classes_abc.pt: field 'num_classes' must be an integer"),
    Case("checkpoint", "finetune --resume without training.config",
         ("finetune", "--synthetic", "{data}", "--out", "{new}/ft", *TINY_FT, "--resume", "{ft_noconfig}"),
         "ft_no_training_config.pt: field 'training.config' is missing", forbid=("napari_retsam.training.runner:collect_items",)),
    Case("checkpoint", "finetune --resume at step 10**12",
         ("finetune", "--synthetic", "{data}", "--out", "{new}/ft", *TINY_FT, "--resume", "{ft_step_huge}"),
         "ft_step_1e12.pt: field 'training.step'", forbid=("napari_retsam.training.runner:collect_items",)),
    Case("checkpoint", "finetune --resume at step -5",
         ("finetune", "--synthetic", "{data}", "--out", "{new}/ft", *TINY_FT, "--resume", "{ft_step_neg}"),
         "field 'training.step' must be an integer >= 0, got -5", forbid=("napari_retsam.training.runner:collect_items",)),
    Case("checkpoint", "finetune --resume with a NaN optimizer state",
         ("finetune", "--synthetic", "{data}", "--out", "{new}/ft", *TINY_FT, "--resume", "{ft_nan_optim}"),
         "field 'training.optimizer.state.0.exp_avg' holds NaN/inf", forbid=("napari_retsam.training.runner:collect_items",)),
    Case("checkpoint", "segment with a NaN fine-tuned decoder weight",
         ("segment", "--image", "{image}", "--out", "{new}/m.png", "--checkpoint", "{ft_nan}", "--model-type", "tiny"),
         "field 'sam' tensor 'mask_decoder."),
    Case("checkpoint", "segment with an inf base weight",
         ("segment", "--image", "{image}", "--out", "{new}/m.png", "--checkpoint", "{nan_ckpt}",
          "--model-type", "tiny"), "holds NaN/inf values in tensor 'image_encoder.patch_embed.proj.weight'"),
    Case("checkpoint", "segment with a fake official vit_b file",
         ("segment", "--image", "{image}", "--out", "{new}/m.png", "--checkpoint", "{fake_official}"),
         "is named like the published sam_vit_b_01ec64.pth"),
    Case("checkpoint", "gan train --resume with a negative iteration",
         ("gan", "train", *GAN_DATA, "--out", "{new}/gan", *TINY_GAN, "--resume", "{gan_neg}"),
         "gan_last_negative_iteration.pt: field 'iteration' must be an integer >= 0, got -3"),
    Case("checkpoint", "gan train --resume of a newer format_version",
         ("gan", "train", *GAN_DATA, "--out", "{new}/gan", *TINY_GAN, "--resume", "{gan_newer_last}"),
         "field 'format_version' is 2: the file was written by a newer napari-retsam"),
    Case("checkpoint", "gan sample of a newer format_version",
         ("gan", "sample", "--checkpoint", "{gan_newer}", "--n", "2", "--out", "{new}/s"),
         "gan_generator_v2.pt: field 'format_version' is 2"),
    Case("checkpoint", "gan report of a newer format_version",
         ("gan", "report", "--checkpoint", "{gan_newer}", *GAN_DATA), "gan_generator_v2.pt: field 'format_version'"),
    Case("checkpoint", "gan sample with a NaN generator weight",
         ("gan", "sample", "--checkpoint", "{gan_nan}", "--n", "2", "--out", "{new}/s"),
         "field 'generator' tensor"),
    # ------------------------------------------------------------------ folders: splits
    Case("folder", "flat images/ beside train/: --split train is ambiguous",
         ("data", "info", "--dataset", "folder", "--root", "{ambiguous}", "--split", "train"), "is ambiguous"),
    Case("folder", "finetune on an ambiguous folder",
         ("finetune", "--dataset", "folder", "--root", "{ambiguous}", "--split", "train", "--out", "{new}/ft",
          *TINY_FT), "is ambiguous"),
    Case("folder", "finetune --split all --val-split all",
         ("finetune", "--dataset", "folder", "--root", "{split_data}", "--split", "all", "--val-split", "all",
          "--out", "{new}/ft", *TINY_FT), "shares 4 of its 4 images with the training split 'all'",
         forbid=("napari_retsam.training.runner:items_from_dataset",)),
    Case("folder", "finetune --split all --val-split train",
         ("finetune", "--dataset", "folder", "--root", "{split_data}", "--split", "all", "--val-split", "train",
          "--out", "{new}/ft", *TINY_FT), "shares 2 of its 2 images",
         forbid=("napari_retsam.training.runner:items_from_dataset",)),
    Case("folder", "finetune on a flat folder with --val-split (same files)",
         ("finetune", "--dataset", "folder", "--root", "{data}", "--split", "train", "--val-split", "test",
          "--out", "{new}/ft", *TINY_FT), "validation split 'test' shares 2",
         forbid=("napari_retsam.training.runner:items_from_dataset",)),
    Case("input=output", "demo --root inside the demo's own output",
         ("demo", "--smallest", "--dataset", "folder", "--root", "{demo_out}/gan_samples", "--out", "{demo_out}"),
         "would write over the input --root", forbid=("napari_retsam.evaluation.demo:run_demo",)),
]


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width``×``height`` RGB but holds a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _npy_header(shape: tuple[int, ...]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _build_workspace(root: Path, tiny_ckpt: Path) -> None:
    from napari_retsam.data import synthetic_fundus, write_synthetic_folder

    s = synthetic_fundus(seed=3, size=64)
    Image.fromarray(s.image).save(root / "a.png")
    Image.fromarray(s.fov.astype(np.uint8) * 255).save(root / "fov.png")
    (root / "link.png").symlink_to("a.png")
    shutil.copy(tiny_ckpt, root / "sam_tiny.pth")
    write_synthetic_folder(root / "data", 2, seed=0, size=64)
    (root / "bomb.png").write_bytes(_png_header(20000, 20000))
    (root / "bomb_mid.png").write_bytes(_png_header(13000, 12000))
    (root / "bomb.npy").write_bytes(_npy_header((100000, 100000, 3)))
    (root / "junk.png").write_bytes(b"this is not a PNG file\n")
    shutil.copytree(root / "data", root / "bomb_data")
    (root / "bomb_data" / "images" / "synth_000.png").write_bytes(_png_header(20000, 20000))
    for folder, names in (("ft_earlier", ("last.pt", "best.pt", "metrics.jsonl")),
                          ("gan_earlier", ("last.pt", "generator_last.pt", "losses.jsonl", "config.json"))):
        (root / folder).mkdir()
        for name in names:
            (root / folder / name).write_bytes(f"earlier {name}".encode())
    (root / "busy").mkdir()
    (root / "a_file").write_text("a file\n")
    (root / "gen.pt").write_bytes(b"never loaded")
    shutil.copytree(root / "data", root / "demo_out" / "gan_samples")
    write_synthetic_folder(root / "ambiguous", 2, seed=5, size=64)
    write_synthetic_folder(root / "ambiguous" / "train", 2, seed=6, size=64)
    write_synthetic_folder(root / "split_data" / "train", 2, seed=7, size=64)
    write_synthetic_folder(root / "split_data" / "test", 2, seed=8, size=64)
    for sub in ("images", "masks", "fov"):  # test ids differ from train ids
        for p in (root / "split_data" / "test" / sub).iterdir():
            p.rename(p.with_name("t" + p.name))
    _build_crafted(root)


def _build_crafted(root: Path) -> None:
    """Crafted checkpoints from real tiny runs (a 1-step fine-tuning run, a 1-iteration GAN run)."""
    import copy

    import torch

    crafted = root / "crafted"
    crafted.mkdir()
    assert main(["finetune", "--synthetic", str(root / "data"), "--checkpoint", str(root / "sam_tiny.pth"),
                 "--model-type", "tiny", "--device", "cpu", "--tile", "0", "--max-steps", "1", "--no-augment",
                 "--val-fraction", "0", "--out", str(crafted / "ft_run")]) == 0
    last = torch.load(crafted / "ft_run" / "last.pt", weights_only=True)

    def ft(name: str, change) -> None:
        state = copy.deepcopy(last)
        change(state)
        torch.save(state, crafted / name)

    ft("ft_num_classes_abc.pt", lambda s: s.update(num_classes="abc"))
    ft("ft_no_training_config.pt", lambda s: s["training"].pop("config"))
    ft("ft_step_1e12.pt", lambda s: s["training"].update(step=10**12))
    ft("ft_step_-5.pt", lambda s: s["training"].update(step=-5))
    ft("ft_step_1000.pt", lambda s: s["training"].update(step=1000, total_steps=1000))
    ft("ft_nan_decoder.pt", lambda s: next(iter(s["sam"].values())).view(-1)[0].fill_(float("nan")))
    ft("ft_nan_optimizer.pt", lambda s: s["training"]["optimizer"]["state"][0]["exp_avg"].view(-1)[0]
       .fill_(float("nan")))
    base = torch.load(root / "sam_tiny.pth", weights_only=True)
    base["image_encoder.patch_embed.proj.weight"].view(-1)[3] = float("inf")
    torch.save(base, crafted / "sam_tiny_nan.pth")
    shutil.copy(root / "sam_tiny.pth", crafted / "sam_vit_b_01ec64.pth")
    data = [str(root / "data") if part == "{data}" else part for part in GAN_DATA]
    assert main(["gan", "train", *data, *TINY_GAN, "--sample-every", "0", "--checkpoint-every", "1",
                 "--out", str(crafted / "gan_run")]) == 0
    gan_last = torch.load(crafted / "gan_run" / "last.pt", weights_only=True)
    gan_gen = torch.load(crafted / "gan_run" / "generator_last.pt", weights_only=True)

    def gan(name: str, source: dict, change) -> None:
        state = copy.deepcopy(source)
        change(state)
        torch.save(state, crafted / name)

    gan("gan_last_negative_iteration.pt", gan_last, lambda s: s.update(iteration=-3))
    gan("gan_generator_v2.pt", gan_gen, lambda s: s.update(format_version=2))
    gan("gan_last_v2.pt", gan_last, lambda s: s.update(format_version=2))
    gan("gan_generator_nan.pt", gan_gen, lambda s: next(iter(s["generator"].values())).view(-1)[0]
        .fill_(float("nan")))


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, tiny_sam_checkpoint: Path) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    _build_workspace(root, tiny_sam_checkpoint)
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` -> (kind, bytes digest, mode): what must not change."""
    state: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            state[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            state[rel] = ("dir",)
        else:
            st = path.stat()
            state[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mode, st.st_mtime_ns)
    return state


HOLDER = (
    "import sys, time\n"
    "from napari_retsam.run_lock import lock_run_folder\n"
    "with lock_run_folder(sys.argv[1], 'retsam finetune (test holder)'):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(600)\n"
)


def hold_folder(folder: Path) -> subprocess.Popen:
    """Another live process holding ``folder`` as its run folder (returns once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _forbid(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    module_name, attr = target.split(":")
    module = importlib.import_module(module_name)

    def must_not_run(*args, **kwargs):
        raise AssertionError(f"{target} ran: the check must come before this work")

    monkeypatch.setattr(module, attr, must_not_run)


def _fill(argv: tuple[str, ...], ws: Path, new: Path) -> list[str]:
    names = {key: str(ws / rel) for key, rel in WORKSPACE.items()}
    names["new"] = str(new)
    return [part.format(**names) for part in argv]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}: {c.name}" for c in CASES])
def test_hostile_input_is_refused_cleanly(case: Case, ws: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    new = tmp_path / "new"
    new.mkdir()
    holders = [hold_folder(ws / name) for name in case.hold]
    try:
        for target in case.forbid:
            _forbid(monkeypatch, target)
        before = snapshot(ws)
        capsys.readouterr()
        code = main(_fill(case.argv, ws, new))
        err = capsys.readouterr().err
        after = snapshot(ws)
    finally:
        for proc in holders:
            proc.kill()
            proc.wait()
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("retsam: error: "), err
    assert "Traceback" not in err and "BytesIO" not in err
    assert case.message in lines[0], lines[0]
    if case.hold:
        assert f"pid {holders[0].pid}" in lines[0]
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                             if before.get(k) != after.get(k)}
    assert not any(new.iterdir()), sorted(new.rglob("*"))


def test_resume_position_beyond_this_run_is_refused(ws: Path, tmp_path: Path, capsys) -> None:
    """A resume position inside the file's own run but beyond this run (step 1000 of a 1-step run):
    found once the run's steps are known, still one error line, nothing written."""
    before = snapshot(ws)
    capsys.readouterr()
    code = main(_fill(("finetune", "--synthetic", "{data}", "--out", "{new}/ft", *TINY_FT, "--resume",
                       "{ft_step_beyond}"), ws, tmp_path))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("retsam: ")]
    assert errors == [err.splitlines()[-1]] and "it is at step 1000, beyond this run's 1 steps" in errors[0], err
    assert snapshot(ws) == before
    assert not (tmp_path / "ft").exists()


# ---------------------------------------------------------------------- concurrency, for real
RUN_FOREVER = {
    "finetune": ["finetune", "--synthetic", "{data}", "--checkpoint", "{ckpt}", "--model-type", "tiny",
                 "--device", "cpu", "--tile", "0", "--epochs", "100000", "--no-augment", "--val-fraction", "0"],
    "gan": ["gan", "train", *GAN_DATA, "--size", "16", "--scales", "1", "--g-channels", "4", "--d-channels", "4",
            "--iterations", "10000000", "--checkpoint-every", "10000000", "--sample-every", "0"],
}


@pytest.mark.parametrize("command", sorted(RUN_FOREVER))
def test_second_run_on_one_out_is_refused_and_a_killed_run_leaves_no_stuck_lock(
    command: str, ws: Path, tmp_path: Path, capsys
) -> None:
    from napari_retsam.run_lock import LOCK_NAME, lock_run_folder

    out = tmp_path / "out"
    argv = _fill(tuple(RUN_FOREVER[command]), ws, tmp_path) + ["--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen([sys.executable, "-m", "napari_retsam", *argv], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (out / LOCK_NAME).is_file() or str(first.pid) not in (out / LOCK_NAME).read_text():
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the first run never took its lock"
            time.sleep(0.2)
        before = snapshot(ws)
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("retsam: error: ") and f"pid {first.pid}" in err[0]
        assert str(out) in err[0]
        assert snapshot(ws) == before
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # kill -9 released the lock: the folder can be taken again at once
    with lock_run_folder(out, "test"):
        pass


def test_lock_is_reentrant_in_one_thread_and_exclusive_across_threads(tmp_path: Path) -> None:
    import threading

    from napari_retsam.errors import RetsamInputError
    from napari_retsam.run_lock import LOCK_NAME, lock_run_folder

    seen: list[str] = []
    with lock_run_folder(tmp_path / "run", "outer"):
        with lock_run_folder(tmp_path / "run", "inner"):  # the CLI locks, then the library it calls
            pass
        assert (tmp_path / "run" / LOCK_NAME).is_file()

        def other() -> None:
            try:
                with lock_run_folder(tmp_path / "run", "other thread"):
                    seen.append("entered")
            except RetsamInputError as exc:
                seen.append(str(exc))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(seen) == 1 and "in use by pid" in seen[0] and "outer" in seen[0]
    assert not (tmp_path / "run" / LOCK_NAME).exists()


# ---------------------------------------------------------------------- allowed: resume and --overwrite
def test_resume_in_place_and_overwrite_are_allowed(ws: Path, tmp_path: Path, capsys) -> None:
    import torch

    out = tmp_path / "ft"
    shutil.copytree(ws / "ft_earlier", out)  # garbage files of an "earlier run"
    argv = ["finetune", "--synthetic", str(ws / "data"), "--checkpoint", str(ws / "sam_tiny.pth"), "--model-type",
            "tiny", "--device", "cpu", "--tile", "0", "--max-steps", "1", "--no-augment", "--val-fraction", "0",
            "--out", str(out)]
    assert main([*argv, "--overwrite"]) == 0
    assert not (out / "best.pt").exists() or torch.load(out / "best.pt", weights_only=True)
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["training"]["step"] == 1
    assert b"earlier" not in (out / "metrics.jsonl").read_bytes()
    assert main([*argv, "--max-steps", "2", "--resume", str(out / "last.pt")]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["training"]["step"] == 2
    capsys.readouterr()
    assert main(argv) == 2  # a new run without --resume/--overwrite
    assert "already holds an earlier fine-tuning run" in capsys.readouterr().err


def test_gan_overwrite_removes_the_earlier_runs_files(ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "gan"
    shutil.copytree(ws / "gan_earlier", out)
    (out / "samples").mkdir()
    (out / "samples" / "iter_000500.png").write_bytes(b"old grid")
    assert main(["gan", "train", *_fill(GAN_DATA, ws, tmp_path), *TINY_GAN, "--sample-every", "0",
                 "--checkpoint-every", "1", "--out", str(out), "--overwrite"]) == 0
    assert not (out / "samples" / "iter_000500.png").exists()
    assert b"earlier" not in (out / "config.json").read_bytes()
    assert (out / "generator_last.pt").read_bytes()[:2] != b"ea"


# ---------------------------------------------------------------------- files: umask, leftovers, cache dir
def test_output_files_honour_the_umask(tmp_path: Path) -> None:
    from napari_retsam.io_utils import atomic_write_bytes

    old = os.umask(0o027)
    try:
        new = atomic_write_bytes(tmp_path / "new.bin", b"x")
        assert new.stat().st_mode & 0o777 == 0o640
        kept = tmp_path / "kept.bin"
        kept.write_bytes(b"old")
        kept.chmod(0o604)
        atomic_write_bytes(kept, b"new")
        assert kept.stat().st_mode & 0o777 == 0o604 and kept.read_bytes() == b"new"
    finally:
        os.umask(old)


def test_leftover_temp_files_of_killed_writes_are_cleaned_up(tmp_path: Path) -> None:
    import fcntl

    from napari_retsam.io_utils import atomic_write_bytes

    old = time.time() - 3600
    stale = tmp_path / ".last.pt.a1b2c3d4.tmp"
    fresh = tmp_path / ".best.pt.zz99yy88.tmp"
    locked = tmp_path / ".metrics.jsonl.qwer_123.tmp"
    foreign = tmp_path / "user-notes.tmp"
    for path in (stale, fresh, locked, foreign):
        path.write_bytes(b"partial")
    for path in (stale, locked, foreign):
        os.utime(path, (old, old))
    with open(locked, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # a live writer
        atomic_write_bytes(tmp_path / "out.png", b"data")
    assert not stale.exists()
    assert fresh.exists() and locked.exists() and foreign.exists()


def test_unwritable_cache_dir_is_said_once(tmp_path: Path, capsys) -> None:
    from napari_retsam.cli._args import warn_if_cache_dir_unwritable

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert warn_if_cache_dir_unwritable(blocker / "cache") is False
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("retsam: warning: --cache-dir") and "memory only" in err[0]
    assert warn_if_cache_dir_unwritable(tmp_path / "cache") is True
    assert capsys.readouterr().err == ""


def test_library_warnings_never_add_lines_to_an_error(tmp_path: Path, capsys, monkeypatch) -> None:
    """A library warning during a refused command: still exactly one stderr line."""
    import warnings

    import napari_retsam.cli.baseline_cmd as baseline_cmd
    from napari_retsam.errors import RetsamInputError

    def noisy(args):
        warnings.warn("some library complaint", UserWarning)
        raise RetsamInputError("refused")

    monkeypatch.setattr(baseline_cmd, "run", noisy)
    assert main(["baseline", "--image", "x.png", "--out", "y.png"]) == 2
    assert capsys.readouterr().err.splitlines() == ["retsam: error: refused"]
