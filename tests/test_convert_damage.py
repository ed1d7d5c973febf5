"""Damaged sources never convert silently: a torch zip file with overwritten bytes (torch.load still
reads it, as garbage weights) fails its members' CRC-32 check, and a tensor holding NaN or Inf stops
the conversion unless --allow-nonfinite; both exit 2 with one line and leave no output."""
import hashlib
import json
import os
import shutil
import threading
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import seedx_jax.convert.run as convert_run
from seedx_jax.agent.config import TINY_VISION
from seedx_jax.checkpoint import read_manifest
from seedx_jax.convert.cli import main as convert
from seedx_jax.sources import SourceError, TorchFile, verify_file
from parity import randomize_
from torch_vision import TorchQwenViT


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """A tiny Qwen-VL ViT saved by torch.save (zip format), its config file and its state."""
    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    state = {k: v.detach().clone() for k, v in randomize_(TorchQwenViT(TINY_VISION)).state_dict().items()}
    torch.save(state, folder / "qwen_vit_G.pt")
    (folder / "vit.json").write_text(json.dumps(TINY_VISION.to_dict()))
    return dict(file=folder / "qwen_vit_G.pt", config=folder / "vit.json", state=state)


def run(vit, source, out, *flags) -> int:
    return convert(["vit", str(source), "--out", str(out), "--config", str(vit["config"]), "--quiet", *flags])


def damage_largest_member(path, *, finite: bool = False) -> str:
    """Overwrite 4 KiB in the middle of the largest tensor's bytes with random bytes (NaN and Inf among
    them, as float32), or with random finite float32 values -> the member's name."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
        data = z.read(info)
    raw = open(path, "rb").read()
    start = raw.find(data)  # located by content, not by the header arithmetic under test
    assert start > 0 and info.file_size > 3 * 4096
    with open(path, "r+b") as f:
        f.seek(start + info.file_size // 2 - 2048)
        rng = np.random.default_rng(0)
        f.write(rng.normal(size=1024).astype(np.float32).tobytes() if finite else rng.bytes(4096))
    return info.filename


def assert_no_output(tmp_path):
    """Neither out/vit nor its .partial- sibling: the out/ folder the conversion created is gone too."""
    assert not (tmp_path / "out").exists(), os.listdir(tmp_path / "out")


@pytest.mark.parametrize("flags", [[], ["--no-hash"]], ids=["hashed", "no_hash"])
def test_torch_file_with_overwritten_bytes_fails_its_crc(vit, tmp_path, capsys, flags):
    """The random bytes hold NaNs too: the CRC error, the cause, is what is reported."""
    source = tmp_path / "qwen_vit_G.pt"
    shutil.copy(vit["file"], source)
    member = damage_largest_member(source)
    assert len(torch.load(source, weights_only=True)) == len(vit["state"])  # the damage loads unnoticed
    assert run(vit, source, tmp_path / "out" / "vit", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seedx-jax convert vit: error:"), err
    assert f"{source}: zip member {member} fails its CRC-32 check" in err[0] and "download it again" in err[0], err
    assert_no_output(tmp_path)


@pytest.mark.parametrize("order", ["check_first", "conversion_first", "nan_first"])
def test_crc_failure_is_raised_whichever_finishes_first(vit, tmp_path, monkeypatch, order):
    """The check runs in a thread beside the conversion: a damage it finds early stops the conversion
    at the next unit of tensors; one it finds after the last unit still fails the conversion; NaNs the
    damage put in a tensor, seen before the check got there, are reported as the damage."""
    source = tmp_path / "qwen_vit_G.pt"
    shutil.copy(vit["file"], source)
    # Finite garbage converts: only the CRC sees it.
    member = damage_largest_member(source, finite=order != "nan_first")
    largest = max(vit["state"], key=lambda k: vit["state"][k].numel())  # the damaged member's tensor
    checked, converted, damaged_read, reads = threading.Event(), threading.Event(), threading.Event(), []
    original_verify, original_write, original_read = (convert_run.verify_file, convert_run.write_converted,
                                                      TorchFile.read)

    def verify(*args, **kwargs):
        if order == "conversion_first":
            assert converted.wait(120)
        elif order == "nan_first":
            assert damaged_read.wait(120)
        try:
            return original_verify(*args, **kwargs)
        finally:
            checked.set()

    def write(*args, **kwargs):
        report = original_write(*args, **kwargs)
        converted.set()
        return report

    def read(self, key):
        if order == "check_first":
            assert checked.wait(120)
        reads.append(key)
        try:
            return original_read(self, key)
        finally:
            if key == largest:
                damaged_read.set()

    monkeypatch.setattr(convert_run, "verify_file", verify)
    monkeypatch.setattr(convert_run, "write_converted", write)
    monkeypatch.setattr(TorchFile, "read", read)
    with pytest.raises(SourceError, match=f"zip member {member} fails its CRC-32 check"):
        convert_run.convert_artefact(str(tmp_path / "out" / "vit"), convert_run.vit_artefact(
            str(source), config=str(vit["config"])))
    if order == "check_first":
        assert len(reads) == 1, reads  # stopped after the first unit (conv1.weight), not after all 42 tensors
    elif order == "conversion_first":
        assert converted.is_set() and len(reads) == len(vit["state"])
    else:
        assert reads[-1] == largest  # stopped by the NaNs, the check still reading
    assert_no_output(tmp_path)


def test_verify_file_reads_once_in_any_block_size(vit, tmp_path):
    data = open(vit["file"], "rb").read()
    want = "sha256:" + hashlib.sha256(data).hexdigest()
    for chunk in (1, 63, 4096, 1 << 23):  # block edges inside headers, members and between them
        assert verify_file(str(vit["file"]), chunk=chunk) == want
        assert verify_file(str(vit["file"]), chunk=chunk, digest=False) is None
    damaged = tmp_path / "damaged.pt"
    shutil.copy(vit["file"], damaged)
    member = damage_largest_member(damaged)
    for chunk in (63, 1 << 23):
        with pytest.raises(SourceError, match=f"zip member {member} fails"):
            verify_file(str(damaged), chunk=chunk, digest=False)


def test_compressed_members_are_checked_too(vit, tmp_path):
    """A checkpoint re-zipped with deflate still loads in torch; its CRCs are checked by inflating."""
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(vit["file"]) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        member = max(src.infolist(), key=lambda i: i.file_size).filename
    assert verify_file(str(deflated)).startswith("sha256:")
    with zipfile.ZipFile(deflated) as z:
        info = z.getinfo(member)
    raw = bytearray(open(deflated, "rb").read())
    middle = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    raw[middle:middle + 64] = bytes(64)
    open(deflated, "wb").write(bytes(raw))
    with pytest.raises(SourceError, match=f"zip member {member} cannot be read"):
        verify_file(str(deflated), digest=False)


@pytest.fixture
def nan_safetensors(vit, tmp_path):
    """The ViT as a bf16 safetensors file whose largest tensor holds 5 NaN and 1 -Inf -> (file, key)."""
    state = {k: v.to(torch.bfloat16) for k, v in vit["state"].items()}
    key = max(state, key=lambda k: state[k].numel())
    state[key].view(-1)[10:15] = float("nan")
    state[key].view(-1)[100] = float("-inf")
    save_file(state, tmp_path / "vit.safetensors")
    return tmp_path / "vit.safetensors", key


def test_nan_tensor_stops_the_conversion(vit, tmp_path, capsys, nan_safetensors):
    source, key = nan_safetensors
    assert run(vit, source, tmp_path / "out" / "vit") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{source}: tensor {key} holds 5 NaN and 1 infinite values" in err[0] and "--allow-nonfinite" in err[0]
    assert_no_output(tmp_path)


def test_allow_nonfinite_converts_and_records_the_counts(vit, tmp_path, capsys, nan_safetensors):
    source, key = nan_safetensors
    assert run(vit, source, tmp_path / "out" / "vit", "--allow-nonfinite") == 0
    line = f"{source}: tensor {key}: 5 NaN, 1 Inf of {vit['state'][key].numel()}"
    assert f"nonfinite: {line}" in capsys.readouterr().err
    assert read_manifest(str(tmp_path / "out" / "vit"))["source"]["report"]["nonfinite"] == [line]


def test_an_empty_torch_file_is_called_empty(tmp_path):
    path = tmp_path / "qwen_vit_G.pt"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match=r"qwen_vit_G.pt: an empty file \(0 bytes\), not a PyTorch checkpoint$"):
        TorchFile(str(path))
