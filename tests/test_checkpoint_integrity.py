"""Integrity of what the package loads (issue 12: 2.3, 2.4, 3.1, 3.2, 3.4, 3.6, 3.7).

Library-level checks behind the CLI rows of ``tests/test_hostile_inputs.py``: every field of
the project checkpoints (fine-tuned SAM, GAN generator and training state) is validated with
one error naming the file and the field; NaN/inf weights and NaN probability maps are refused;
bad embedding-cache entries are dropped, recomputed with one warning and overwritten; the
published hashes of official files are verified once per (path, size, mtime); ambiguous folder
layouts are refused.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_retsam.errors import RetsamInputError


def _craft(source: Path, out: Path, change) -> Path:
    state = torch.load(source, map_location="cpu", weights_only=True)
    state = copy.deepcopy(state)
    change(state)
    torch.save(state, out)
    return out


# ---------------------------------------------------------------------- the field helper
def test_field_helper_names_file_and_field() -> None:
    from napari_retsam.checkpoint_fields import CheckpointFields, first_non_finite

    f = CheckpointFields({"n": "abc", "k": -2, "ok": 3, "t": torch.tensor([1.0, float("nan")]), "nested": {"x": True},
                          "v": 3, "s": {"a": torch.zeros(2), "b": torch.tensor([float("inf")])}}, "f.pt", "checkpoint")
    assert f.integer("ok", lo=1, hi=4) == 3
    assert f.integer("missing", optional=True, default=7) == 7
    cases = [
        (lambda: f.integer("n"), "checkpoint f.pt: field 'n' must be an integer, got 'abc'"),
        (lambda: f.integer("k", lo=0), "field 'k' must be an integer >= 0, got -2"),
        (lambda: f.integer("ok", lo=1, hi=2), "field 'ok' must be an integer in 1..2, got 3"),
        (lambda: f.value("absent"), "field 'absent' is missing"),
        (lambda: f.tensor("t"), "field 't' holds NaN/inf values"),
        (lambda: f.sub("nested").integer("x"), "field 'nested.x' must be an integer, got True"),
        (lambda: f.format_version("v", supported=1), "field 'v' is 3: the file was written by a newer"),
        (lambda: f.tensors("s"), "field 's' tensor 'b' holds NaN/inf values"),
        (lambda: f.text("ok"), "field 'ok' must be a string"),
    ]
    for call, message in cases:
        with pytest.raises(RetsamInputError) as info:
            call()
        assert message in str(info.value) and "\n" not in str(info.value)
    assert first_non_finite({"a": torch.zeros(1), "i": torch.tensor([3]), "b": torch.tensor([float("nan")])}) == "b"


# ---------------------------------------------------------------------- fine-tuned SAM (2.3)
FT_MUTATIONS = [
    ("num_classes 'abc'", lambda s: s.update(num_classes="abc"), "field 'num_classes' must be an integer"),
    ("num_classes 0", lambda s: s.update(num_classes=0), "field 'num_classes' must be an integer in 1..4, got 0"),
    ("model_type missing", lambda s: s.pop("model_type"), "field 'model_type' is missing"),
    ("sam missing", lambda s: s.pop("sam"), "field 'sam' is missing"),
    ("sam not tensors", lambda s: s["sam"].update({"mask_decoder.x": [1, 2]}), "field 'sam' entry 'mask_decoder.x'"),
    ("fusion list", lambda s: s.update(fusion=[1]), "field 'fusion' must be a dict"),
    ("config unknown key", lambda s: s["config"].update(bogus=1), "field 'config' has unknown keys ['bogus']"),
    ("config negative size", lambda s: s["config"].update(img_size=-64), "field 'config.img_size' must be an integer"),
    ("config bad encoder", lambda s: s["config"].update(encoder="resnet"), "field 'config.encoder' must be one of"),
    ("fusion_config channels", lambda s: s["fusion_config"].update(channels="32"), "field 'fusion_config.channels'"),
    ("base sha not hex", lambda s: s.update(base_checkpoint_sha256="xyz"), "field 'base_checkpoint_sha256'"),
    ("meta not a dict", lambda s: s.update(meta="x"), "field 'meta' must be a dict"),
    ("NaN fusion weight", lambda s: next(iter(s["fusion"].values())).view(-1)[0].fill_(float("nan")),
     "field 'fusion' tensor"),
]


@pytest.mark.parametrize("change,message", [m[1:] for m in FT_MUTATIONS], ids=[m[0] for m in FT_MUTATIONS])
def test_finetuned_checkpoint_fields_are_validated(change, message, tiny_finetuned_checkpoint, tmp_path) -> None:
    from napari_retsam.sam.checkpoints import load_sam

    bad = _craft(tiny_finetuned_checkpoint, tmp_path / "crafted.pt", change)
    with pytest.raises(RetsamInputError) as info:
        load_sam(bad, device="cpu")
    text = str(info.value)
    assert str(bad) in text and message in text, text


def test_valid_finetuned_checkpoint_still_loads(tiny_finetuned_checkpoint) -> None:
    from napari_retsam.sam.checkpoints import load_sam

    assert load_sam(tiny_finetuned_checkpoint, device="cpu").num_classes == 1


# ---------------------------------------------------------------------- NaN weights and maps (3.1)
def test_non_finite_official_style_weights_are_refused_naming_the_tensor(tiny_sam_checkpoint, tmp_path) -> None:
    from napari_retsam.sam.checkpoints import load_sam

    key = "mask_decoder.output_upscaling.0.weight"
    bad = _craft(tiny_sam_checkpoint, tmp_path / "nan.pth", lambda s: s[key].view(-1)[5].fill_(float("nan")))
    with pytest.raises(RetsamInputError, match=f"{bad}.*NaN/inf values in tensor '{key}'"):
        load_sam(bad, device="cpu")


def test_a_nan_probability_map_is_never_returned_or_written(tiny_sam, tmp_path) -> None:
    from napari_retsam.cli._files import write_probability
    from napari_retsam.sam.segmenter import Segmenter

    with torch.no_grad():
        tiny_sam.sam.mask_decoder.output_upscaling[0].weight.fill_(float("nan"))  # broken in memory
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    with pytest.raises(RetsamInputError, match="NaN/inf pixel"):
        Segmenter(tiny_sam).segment(image, None, tile=0)
    prob = np.full((4, 4), 0.5, np.float32)
    prob[1, 2] = np.nan
    for name in ("p.npy", "p.png"):
        with pytest.raises(RetsamInputError, match="refusing to write .* 1 NaN/inf value"):
            write_probability(tmp_path / name, prob)
        assert not (tmp_path / name).exists()


# ---------------------------------------------------------------------- GAN checkpoints (2.3, 3.2)
GAN_MUTATIONS = [
    ("negative iteration", "last.pt", lambda s: s.update(iteration=-1), "field 'iteration' must be an integer >= 0"),
    ("newer train format", "last.pt", lambda s: s.update(format_version=2), "field 'format_version' is 2"),
    ("newer generator format", "generator_last.pt", lambda s: s.update(format_version=7),
     "field 'format_version' is 7"),
    ("nested newer format", "last.pt", lambda s: s["generator_checkpoint"].update(format_version=2),
     "field 'generator_checkpoint.format_version' is 2"),
    ("iteration mismatch", "last.pt", lambda s: s.update(iteration=1), "its generator_checkpoint is at iteration 3"),
    ("generator NaN", "generator_last.pt",
     lambda s: next(iter(s["generator"].values())).view(-1)[0].fill_(float("inf")), "field 'generator' tensor"),
    ("fov template shape", "generator_last.pt", lambda s: s.update(fov_template=torch.ones(5, 5, dtype=torch.bool)),
     "field 'fov_template' must have shape (32, 32)"),
    ("has_masks not bool", "generator_last.pt", lambda s: s.update(has_masks="yes"), "field 'has_masks'"),
    ("config bad", "generator_last.pt", lambda s: s["config"].update(size=33), "field 'config' is invalid"),
    ("rng state", "last.pt", lambda s: s.update(torch_rng_state=torch.zeros(3)), "field 'torch_rng_state'"),
    ("optimizer NaN", "last.pt",
     lambda s: s["opt_g"]["state"][0]["exp_avg"].view(-1)[0].fill_(float("nan")), "field 'opt_g.state.0.exp_avg'"),
    ("cursor negative", "last.pt", lambda s: s.update(cursor=-4), "field 'cursor'"),
    ("world size", "last.pt", lambda s: s.update(world_size=0), "field 'world_size'"),
]


@pytest.mark.parametrize("name,change,message", [m[1:] for m in GAN_MUTATIONS], ids=[m[0] for m in GAN_MUTATIONS])
def test_gan_checkpoint_fields_are_validated(name, change, message, gan_run, tmp_path) -> None:
    from napari_retsam.gan.checkpoint import load_generator

    bad = _craft(gan_run / name, tmp_path / f"crafted_{name}", change)
    with pytest.raises(RetsamInputError) as info:
        load_generator(bad)
    text = str(info.value)
    assert str(bad) in text and message in text, text


def test_gan_resume_refuses_a_newer_format_and_a_negative_iteration(gan_run, tmp_path) -> None:
    from fixtures_gan import tiny_config, tiny_pairs

    from napari_retsam.gan.train import GanTrainer

    for change, message in ((lambda s: s.update(format_version=2), "field 'format_version' is 2"),
                            (lambda s: s.update(iteration=-5), "field 'iteration' must be an integer >= 0")):
        bad = _craft(gan_run / "last.pt", tmp_path / "last_crafted.pt", change)
        with pytest.raises(RetsamInputError, match=message):
            GanTrainer(tiny_config(), tiny_pairs(), tmp_path / "out", resume=bad)


def test_valid_gan_checkpoints_still_load(gan_run) -> None:
    from napari_retsam.gan.checkpoint import load_generator

    assert load_generator(gan_run / "last.pt").iteration == 3
    assert load_generator(gan_run / "generator_last.pt").iteration == 3


# ---------------------------------------------------------------------- embedding cache (2.4, 3.6)
def _entry_path(model, image, disk: Path) -> tuple[Path, dict]:
    from napari_retsam.sam.embeddings import embedding_signature, image_sha256, signature_key

    signature = embedding_signature(model, image_sha256(image), (0, 0, image.shape[0], image.shape[1]))
    return disk / f"{signature_key(signature)}.pt", signature


def _poison_shape(entry):
    entry["embedding"] = torch.zeros(32, 4, 5)


def _poison_channels(entry):
    entry["embedding"] = torch.zeros(31, 4, 4)


def _poison_dtype(entry):
    entry["embedding"] = entry["embedding"].double()


def _poison_nan_with_valid_checksum(entry):
    from napari_retsam.sam.embeddings import tensor_sha256

    entry["embedding"].view(-1)[3] = float("nan")
    entry["sha256"] = tensor_sha256(entry["embedding"])


def _poison_perturbed(entry):
    entry["embedding"].mul_(1.01)  # checksum now stale


def _poison_no_checksum(entry):
    entry.pop("sha256")


def _poison_garbage(entry):
    return b"\x00not a torch file"


POISONS = [_poison_shape, _poison_channels, _poison_dtype, _poison_nan_with_valid_checksum, _poison_perturbed,
           _poison_no_checksum, _poison_garbage]


@pytest.mark.parametrize("poison", POISONS, ids=[p.__name__[8:] for p in POISONS])
def test_bad_cache_entry_is_dropped_recomputed_once_warned_and_overwritten(poison, tiny_sam, tmp_path) -> None:
    from napari_retsam.sam.embeddings import EmbeddingCache, EmbeddingCacheWarning, tensor_sha256
    from napari_retsam.sam.segmenter import Segmenter

    disk = tmp_path / "emb"
    image = np.random.default_rng(1).integers(0, 255, (48, 60, 3), dtype=np.uint8)
    first = Segmenter(tiny_sam, cache=EmbeddingCache(disk_dir=disk)).segment(image, None, tile=0)
    path, signature = _entry_path(tiny_sam, image, disk)
    good = torch.load(path, weights_only=True)
    assert good["sha256"] == tensor_sha256(good["embedding"]) and list(good["embedding"].shape) == [32, 4, 4]
    entry = copy.deepcopy(good)
    raw = poison(entry)
    if raw is not None:
        path.write_bytes(raw)
    else:
        torch.save(entry, path)

    cache = EmbeddingCache(disk_dir=disk)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = Segmenter(tiny_sam, cache=cache).segment(image, None, tile=0)
    ours = [w for w in caught if issubclass(w.category, EmbeddingCacheWarning)]
    assert len(ours) == 1 and str(path) in str(ours[0].message) and "recomputed" in str(ours[0].message)
    assert cache.rejected == 1 and cache.misses == 1 and cache.disk_hits == 0
    assert np.array_equal(out.prob, first.prob)
    # the cache is no longer poisoned: the entry was overwritten with the recomputed one
    again = torch.load(path, weights_only=True)
    assert again["signature"] == signature and torch.equal(again["embedding"], good["embedding"])
    assert again["sha256"] == good["sha256"]
    fresh = EmbeddingCache(disk_dir=disk)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmbeddingCacheWarning)
        Segmenter(tiny_sam, cache=fresh).segment(image, None, tile=0)
    assert fresh.disk_hits == 1 and fresh.rejected == 0


def test_poisoned_cache_in_a_finetune_run_warns_once_and_heals(tiny_sam_checkpoint, tmp_path, capsys) -> None:
    from napari_retsam.cli.main import main
    from napari_retsam.data import write_synthetic_folder

    data = write_synthetic_folder(tmp_path / "data", 1, seed=0, size=64)
    cache = tmp_path / "cache"
    argv = ["finetune", "--synthetic", str(data), "--checkpoint", str(tiny_sam_checkpoint), "--model-type", "tiny",
            "--device", "cpu", "--tile", "0", "--max-steps", "1", "--no-augment", "--val-fraction", "0",
            "--cache-dir", str(cache), "--out", str(tmp_path / "ft")]
    assert main(argv) == 0
    entries = sorted(cache.glob("*.pt"))
    assert len(entries) == 1
    good = entries[0].read_bytes()
    entry = torch.load(entries[0], weights_only=True)
    entry["embedding"].view(-1)[0] = float("nan")  # poisoned, checksum stale
    torch.save(entry, entries[0])
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("retsam: warning:")]
    assert len(warned) == 1 and "embedding cache entry" in warned[0] and "recomputed" in warned[0], warned
    assert torch.load(entries[0], weights_only=True)["sha256"] == torch.load(io.BytesIO(good),
                                                                              weights_only=True)["sha256"]


# ---------------------------------------------------------------------- published hashes (3.7)
@pytest.fixture
def fake_official(tiny_sam_checkpoint, tmp_path, monkeypatch):
    """The tiny checkpoint registered as a published file (its own MD5 and size), an empty cache."""
    from napari_retsam.sam import weight_cache

    monkeypatch.setenv("RETSAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(weight_cache, "_VERIFIED", {})
    data = tiny_sam_checkpoint.read_bytes()
    info = weight_cache.CheckpointInfo("tiny", "https://example.invalid/sam_tiny_0123ab.pth",
                                      hashlib.md5(data).hexdigest(), len(data))
    monkeypatch.setitem(weight_cache.OFFICIAL_CHECKPOINTS, "tiny", info)
    path = tmp_path / "sam_tiny_0123ab.pth"
    shutil.copy(tiny_sam_checkpoint, path)
    calls: list[Path] = []
    original = weight_cache._md5_file

    def counting_md5(p, *a, **k):
        calls.append(Path(p))
        return original(p, *a, **k)

    monkeypatch.setattr(weight_cache, "_md5_file", counting_md5)
    return path, calls


def test_published_file_is_hashed_once_and_remembered(fake_official, monkeypatch) -> None:
    import json

    from napari_retsam.sam import checkpoints, weight_cache

    path, calls = fake_official
    checkpoints.load_sam(path, device="cpu")
    checkpoints.load_sam(path, device="cpu")
    assert calls == [path]  # once per file
    record = json.loads((weight_cache.cache_root() / weight_cache.VERIFIED_FILE).read_text())
    assert record["files"][str(path.resolve())]["size"] == path.stat().st_size
    monkeypatch.setattr(weight_cache, "_VERIFIED", {})  # a new process: the JSON remembers
    checkpoints.load_sam(path, device="cpu")
    assert calls == [path]
    st = path.stat()  # a changed mtime: hashed again
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    checkpoints.load_sam(path, device="cpu")
    assert calls == [path, path]


def test_bit_flipped_published_file_is_refused(fake_official, tmp_path) -> None:
    from napari_retsam.sam import checkpoints

    path, _ = fake_official
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the tensor data: torch would load it
    flipped = tmp_path / "renamed_copy.pth"  # recognised by its size
    flipped.write_bytes(bytes(data))
    torch.load(flipped, map_location="cpu", weights_only=True)  # torch alone loads it without complaint
    with pytest.raises(RetsamInputError, match=r"renamed_copy.pth is not the published sam_tiny_0123ab.pth: MD5"):
        checkpoints.load_sam(flipped, device="cpu")
    path.write_bytes(bytes(data))  # same name, same size
    with pytest.raises(RetsamInputError, match="is not the published sam_tiny_0123ab.pth"):
        checkpoints.load_sam(path, device="cpu")


def test_truncated_file_with_an_official_name_is_refused_without_hashing(fake_official, tmp_path) -> None:
    from napari_retsam.sam import checkpoints

    path, calls = fake_official
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(RetsamInputError, match="is named like the published sam_tiny_0123ab.pth but has"):
        checkpoints.load_sam(path, device="cpu")
    assert calls == []


def test_a_file_of_the_lite_medsam_release_size_is_verified(tmp_path, monkeypatch) -> None:
    from napari_retsam.sam import checkpoints
    from napari_retsam.sam.lite_medsam_weights import LITE_MEDSAM_SIZE

    monkeypatch.setenv("RETSAM_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "lite_medsam.pth"
    with open(fake, "wb") as fh:
        fh.truncate(LITE_MEDSAM_SIZE)  # the released size, other bytes
    with pytest.raises(RetsamInputError, match="lite_medsam.pth has SHA-256 .* expected"):
        checkpoints.load_sam(fake, device="cpu")


# ---------------------------------------------------------------------- folder layouts (3.4)
def test_flat_images_beside_split_folders_are_ambiguous(tmp_path) -> None:
    from napari_retsam.data import open_dataset, write_synthetic_folder

    root = tmp_path / "set"
    write_synthetic_folder(root, 2, seed=0, size=64)
    write_synthetic_folder(root / "test", 2, seed=1, size=64)
    for split in ("train", "test", "all"):
        with pytest.raises(RetsamInputError, match=r"is ambiguous: it holds both a flat images/ folder and test/images/"):
            open_dataset("folder", root, split=split)
    shutil.rmtree(root / "images")
    assert len(open_dataset("folder", root, split="test")) == 2


# ---------------------------------------------------------------------- split overlap (3.5)
def test_validation_split_must_not_overlap_training(tmp_path) -> None:
    from napari_retsam.data import write_synthetic_folder
    from napari_retsam.training.config import FinetuneConfig
    from napari_retsam.training.runner import DataOptions, collect_items

    root = tmp_path / "set"
    write_synthetic_folder(root / "train", 2, seed=0, size=64)
    write_synthetic_folder(root / "test", 2, seed=1, size=64)
    for sub in ("images", "masks", "fov"):
        for p in (root / "test" / sub).iterdir():
            p.rename(p.with_name("t" + p.name))
    config = FinetuneConfig(model_type="tiny")
    for split, val in (("all", "all"), ("all", "train"), ("train", "train"), ("all", "test")):
        with pytest.raises(RetsamInputError, match=f"validation split .{val}. shares [24] of its"):
            collect_items(DataOptions(dataset="folder", root=root, split=split, val_split=val), config)
    train, val = collect_items(DataOptions(dataset="folder", root=root, split="train", val_split="test"), config)
    assert [t.id for t in train] == ["synth_000", "synth_001"] and [v.id for v in val] == ["tsynth_000", "tsynth_001"]
