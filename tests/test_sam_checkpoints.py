"""Checkpoint loading, the project format, download (local, no network) and devices."""

from __future__ import annotations

import hashlib
import io
import urllib.request
from pathlib import Path

import pytest
import torch

from napari_retsam.errors import RetsamInputError
from napari_retsam.io_utils import sha256_file
from napari_retsam.sam import weight_cache
from napari_retsam.sam.checkpoints import (
    load_sam,
    save_official_style,
    save_project_checkpoint,
)
from napari_retsam.sam.models import build_sam
from napari_retsam.sam.weight_cache import OFFICIAL_CHECKPOINTS, download_checkpoint


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_official_state_dict_round_trip(tiny_sam_checkpoint):
    reference = build_sam("tiny", seed=0)
    model = load_sam(tiny_sam_checkpoint, device="cpu")  # model type recognised from the shapes
    assert model.model_type == "tiny"
    assert _state_equal(model.sam.state_dict(), reference.sam.state_dict())
    assert model.checkpoint_sha256 == sha256_file(tiny_sam_checkpoint) == model.encoder_sha256
    raw = torch.load(tiny_sam_checkpoint, map_location="cpu", weights_only=True)
    assert set(raw) == set(reference.sam.state_dict())  # plain state dict like the official files
    assert not model.training


def test_project_checkpoint_round_trip_uses_recorded_base(tiny_sam_checkpoint, tiny_finetuned_checkpoint):
    raw = torch.load(tiny_finetuned_checkpoint, map_location="cpu", weights_only=True)
    assert raw["format"] == "napari-retsam/finetuned-v1" and raw["model_type"] == "tiny"
    assert all(k.startswith("mask_decoder.") for k in raw["sam"])
    assert raw["base_checkpoint_sha256"] == sha256_file(tiny_sam_checkpoint)
    for model in (
        load_sam(tiny_finetuned_checkpoint, device="cpu"),
        load_sam(tiny_sam_checkpoint, finetuned=tiny_finetuned_checkpoint, device="cpu"),
    ):
        base = load_sam(tiny_sam_checkpoint, device="cpu")
        decoder = {k[len("mask_decoder."):]: v for k, v in raw["sam"].items()}
        assert _state_equal(model.sam.mask_decoder.state_dict(), decoder)
        assert _state_equal(model.sam.image_encoder.state_dict(), base.sam.image_encoder.state_dict())
        assert _state_equal(model.fusion.state_dict(), raw["fusion"])
        assert model.encoder_sha256 == base.encoder_sha256  # embeddings of the base stay reusable
        assert model.checkpoint_sha256 == sha256_file(tiny_finetuned_checkpoint)
        emb = torch.randn(1, 32, 4, 4)
        box = torch.tensor([[[2.0, 2.0, 40.0, 50.0]]])
        with torch.no_grad():
            assert not torch.allclose(model.decode(emb, box), base.decode(emb, box))


def test_project_checkpoint_with_wrong_or_missing_base(tiny_finetuned_checkpoint, tmp_path, offline_sam):
    other = tmp_path / "other_tiny.pth"
    save_official_style(build_sam("tiny", seed=7), other)
    with pytest.raises(RetsamInputError, match="is not the one"):
        load_sam(tiny_finetuned_checkpoint, base_checkpoint=other, device="cpu")
    # recorded base path gone and tiny has no official download -> clear message, no hang
    raw = torch.load(tiny_finetuned_checkpoint, map_location="cpu", weights_only=True)
    raw["base_checkpoint_path"] = str(tmp_path / "moved_away.pth")
    moved = tmp_path / "ft_moved.pt"
    torch.save(raw, moved)
    with pytest.raises(RetsamInputError, match="needs its base tiny model"):
        load_sam(moved, device="cpu")
    with pytest.raises(RetsamInputError, match="is for tiny"):
        load_sam(tiny_finetuned_checkpoint, model_type="vit_b", device="cpu")


def test_self_contained_project_checkpoint_needs_no_base(tmp_path):
    model = build_sam("tiny", seed=4)
    with torch.no_grad():
        model.fusion.conv2.weight.fill_(0.01)
    with pytest.raises(RetsamInputError, match="self_contained"):
        save_project_checkpoint(model, tmp_path / "x.pt")
    path = save_project_checkpoint(model, tmp_path / "full.pt", self_contained=True)
    loaded = load_sam(path, device="cpu")
    assert _state_equal(loaded.sam.state_dict(), model.sam.state_dict())
    assert _state_equal(loaded.fusion.state_dict(), model.fusion.state_dict())


def test_fully_fine_tuned_file_is_its_own_encoder_identity(tiny_sam_checkpoint, tmp_path):
    """Embeddings of a fully fine-tuned (self-contained) model must never be served
    from the base model's cache entries: the encoder weights differ."""
    from napari_retsam.sam.embeddings import embedding_signature

    base = load_sam(tiny_sam_checkpoint, device="cpu")
    with torch.no_grad():  # full fine-tuning changes the encoder
        next(base.sam.image_encoder.parameters()).add_(0.5)
    path = save_project_checkpoint(base, tmp_path / "full.pt", self_contained=True)
    tuned = load_sam(path, device="cpu")
    assert tuned.encoder_sha256 == sha256_file(path) != sha256_file(tiny_sam_checkpoint)
    plain = load_sam(tiny_sam_checkpoint, device="cpu")
    window = (0, 0, 64, 64)
    assert embedding_signature(tuned, "img", window) != embedding_signature(plain, "img", window)


def test_architecture_mismatch_names_file_and_expectation(tiny_sam_checkpoint, tiny_finetuned_checkpoint, tmp_path):
    with pytest.raises(RetsamInputError) as err:
        load_sam(tiny_sam_checkpoint, model_type="vit_b", device="cpu")
    message = str(err.value)
    assert str(tiny_sam_checkpoint) in message and "vit_b" in message and "looks like a tiny checkpoint" in message
    # a project checkpoint used as the base of another
    with pytest.raises(RetsamInputError, match="expected an official SAM state dict"):
        load_sam(tiny_finetuned_checkpoint, finetuned=tiny_finetuned_checkpoint, device="cpu")


@pytest.mark.slow
def test_vit_b_file_loaded_as_vit_l_is_refused(vit_b_sam, tmp_path):
    path = save_official_style(vit_b_sam, tmp_path / "sam_vit_b_random.pth")
    with pytest.raises(RetsamInputError, match="looks like a vit_b checkpoint") as err:
        load_sam(path, model_type="vit_l", device="cpu")
    assert "vit_l" in str(err.value) and str(path) in str(err.value)


def test_truncated_garbage_and_unknown_files(tiny_sam_checkpoint, tmp_path):
    data = tiny_sam_checkpoint.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    for path in (truncated, garbage):
        with pytest.raises(RetsamInputError, match="truncated, corrupt") as err:
            load_sam(path, device="cpu")
        assert str(path) in str(err.value)
    unknown = tmp_path / "unknown.pt"
    torch.save({"weights": torch.zeros(3)}, unknown)
    with pytest.raises(RetsamInputError, match="unknown format"):
        load_sam(unknown, device="cpu")
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], listed)
    with pytest.raises(RetsamInputError, match="expected a state dict"):
        load_sam(listed, device="cpu")
    with pytest.raises(RetsamInputError, match="does not exist"):
        load_sam(tmp_path / "missing.pth", device="cpu")


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_checkpoint_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.target = str(marker)
    path = tmp_path / "evil.pth"
    torch.save({"image_encoder.x": exploit}, path)
    with pytest.raises(RetsamInputError):
        load_sam(path, device="cpu")
    assert not marker.exists()


def test_offline_without_checkpoint_says_where_to_put_it(offline_sam, monkeypatch):
    calls = []
    monkeypatch.setattr(weight_cache.urllib.request, "urlopen", lambda req, timeout=None: calls.append(req) or (_ for _ in ()).throw(OSError("network is unreachable")))
    with pytest.raises(RetsamInputError) as err:
        load_sam(None, model_type="vit_b", device="cpu")
    message = str(err.value)
    info = OFFICIAL_CHECKPOINTS["vit_b"]
    assert info.url in message and str(offline_sam / "checkpoints" / info.filename) in message
    assert "\n" not in message and len(calls) == 1
    monkeypatch.setenv("RETSAM_OFFLINE", "1")
    with pytest.raises(RetsamInputError, match="RETSAM_OFFLINE"):
        load_sam(None, model_type="vit_h", device="cpu")
    assert len(calls) == 1  # no network attempt at all when offline is declared
    assert not list((offline_sam / "checkpoints").glob("*.pth"))


def test_download_from_local_url_checks_md5_and_is_atomic(tmp_path):
    payload = bytes(range(256)) * 9000  # ~2.3 MB, several read chunks
    source = tmp_path / "remote.bin"
    source.write_bytes(payload)
    good_md5 = hashlib.md5(payload).hexdigest()
    seen = []
    dest = download_checkpoint(
        "vit_b", tmp_path / "cache", url=source.as_uri(), md5=good_md5,
        progress=lambda done, total, msg: seen.append((done, total)),
    )
    assert dest.name == OFFICIAL_CHECKPOINTS["vit_b"].filename and dest.read_bytes() == payload
    assert not list((tmp_path / "cache").glob("*.part"))
    assert seen and seen[-1][0] == len(payload) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(RetsamInputError, match="has MD5"):
        download_checkpoint("vit_l", tmp_path / "cache2", url=source.as_uri(), md5="0" * 32)
    assert not any((tmp_path / "cache2").iterdir())  # neither the real name nor a .part file


class _Response:
    def __init__(self, data: bytes, status: int) -> None:
        self._buf = io.BytesIO(data)
        self.status = status
        self.headers = {"Content-Length": str(len(data))}

    def read(self, n: int) -> bytes:
        return self._buf.read(n)

    def getcode(self) -> int:
        return self.status

    def close(self) -> None:
        pass


@pytest.mark.parametrize("honours_range", [True, False])
def test_download_resumes_a_partial_file(tmp_path, honours_range):
    payload = b"0123456789abcdef" * 100000
    folder = tmp_path / "cache"
    folder.mkdir()
    info = OFFICIAL_CHECKPOINTS["vit_h"]
    (folder / (info.filename + ".part")).write_bytes(payload[:500000])
    requests: list[urllib.request.Request] = []

    def opener(request, timeout=None):
        requests.append(request)
        rng = request.get_header("Range")
        if rng and honours_range:
            start = int(rng.split("=")[1].rstrip("-"))
            return _Response(payload[start:], 206)
        return _Response(payload, 200)

    dest = download_checkpoint("vit_h", folder, opener=opener, md5=hashlib.md5(payload).hexdigest())
    assert dest.read_bytes() == payload
    assert requests[0].get_header("Range") == "bytes=500000-"


def test_select_device():
    from napari_retsam.sam.device import select_device

    assert select_device("cpu").type == "cpu"
    assert select_device(None).type in ("cpu", "cuda", "mps")
    with pytest.raises(RetsamInputError, match="unknown device"):
        select_device("tpu0")
    if not torch.cuda.is_available():
        with pytest.raises(RetsamInputError, match="CUDA is not available"):
            select_device("cuda")


@pytest.fixture
def counted_reads(monkeypatch):
    """Counts every way a checkpoint file can be read: torch.load, Path.read_bytes, hashing from disk."""
    from napari_retsam import io_utils

    reads: list[tuple[str, str]] = []
    real_load, real_read_bytes, real_sha, real_md5 = torch.load, Path.read_bytes, io_utils.sha256_file, \
        weight_cache._md5_file

    def load(source, *args, **kwargs):
        reads.append(("torch.load", str(source) if isinstance(source, (str, Path)) else "buffer"))
        return real_load(source, *args, **kwargs)

    def read_bytes(self):
        reads.append(("read_bytes", self.name))
        return real_read_bytes(self)

    def sha(path, *args, **kwargs):
        reads.append(("sha256_file", Path(path).name))
        return real_sha(path, *args, **kwargs)

    def md5(path, *args, data=None, **kwargs):
        if data is None:
            reads.append(("md5 from disk", Path(path).name))
        return real_md5(path, *args, data=data, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.setattr(io_utils, "sha256_file", sha)
    monkeypatch.setattr(weight_cache, "_md5_file", md5)
    return reads


def test_each_checkpoint_file_is_read_once(tiny_sam_checkpoint, tiny_finetuned_checkpoint, tmp_path, monkeypatch,
                                           counted_reads):
    """Official-format file, fine-tuned file and its base: one read each (hash and unpickling from the same bytes)."""
    import shutil

    monkeypatch.setenv("RETSAM_CACHE", str(tmp_path / "cache"))
    base = shutil.copy(tiny_sam_checkpoint, tmp_path / "base.pth")  # fresh files: nothing memoised yet
    tuned = shutil.copy(tiny_finetuned_checkpoint, tmp_path / "tuned.pt")
    model = load_sam(base, device="cpu")
    assert counted_reads == [("read_bytes", "base.pth"), ("torch.load", "buffer")]
    assert model.checkpoint_sha256 == sha256_file(base)
    counted_reads.clear()
    tuned_model = load_sam(base, finetuned=tuned, device="cpu")
    # the fine-tuned file is read (once), then its base: hashed already, so loaded straight from disk
    assert counted_reads == [("read_bytes", "tuned.pt"), ("torch.load", "buffer"), ("torch.load", str(base))]
    assert tuned_model.checkpoint_sha256 == sha256_file(tuned) and tuned_model.encoder_sha256 == sha256_file(base)
    counted_reads.clear()
    other = shutil.copy(tiny_finetuned_checkpoint, tmp_path / "tuned_alone.pt")
    load_sam(other, base_checkpoint=base, device="cpu")  # a fine-tuned file passed as the checkpoint
    assert counted_reads == [("read_bytes", "tuned_alone.pt"), ("torch.load", "buffer"), ("torch.load", str(base))]


def test_published_file_is_verified_hashed_and_loaded_in_one_read(tiny_sam_checkpoint, tmp_path, monkeypatch,
                                                                  counted_reads):
    import shutil

    monkeypatch.setenv("RETSAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(weight_cache, "_VERIFIED", {})
    data = tiny_sam_checkpoint.read_bytes()
    info = weight_cache.CheckpointInfo("tiny", "https://example.invalid/sam_tiny_0123ab.pth",
                                       hashlib.md5(data).hexdigest(), len(data))
    monkeypatch.setitem(weight_cache.OFFICIAL_CHECKPOINTS, "tiny", info)
    path = shutil.copy(tiny_sam_checkpoint, tmp_path / "sam_tiny_0123ab.pth")
    counted_reads.clear()
    model = load_sam(path, device="cpu")
    assert counted_reads == [("read_bytes", "sam_tiny_0123ab.pth"), ("torch.load", "buffer")]  # MD5 + SHA-256 + load
    assert model.checkpoint_sha256 == sha256_file(path)
    counted_reads.clear()
    load_sam(path, device="cpu")  # verified and hashed before: one plain load
    assert counted_reads == [("torch.load", str(path))]
