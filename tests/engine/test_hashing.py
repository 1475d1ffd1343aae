"""AUTOMATIC1111's hashes: "Lora hashes" (the addnet hash of a safetensors file's tensor
data, or kohya's sshs_model_hash), "TI hashes", "VAE hash", and the hash cache."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from sdstudio.core import paths
from sdstudio.core.request import LoraSpec
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import hashing
from sdstudio.engine.lora import apply_embeddings, apply_loras, embedding_hashes
from tests.engine._lora_fixtures import LINEAR, Rand, keyed, kohya, lora_layer, module


def _after_header(path: Path) -> str:
    """sha256 of the bytes after the 8-byte little-endian length and the JSON header."""
    raw = path.read_bytes()
    return hashlib.sha256(raw[8 + int.from_bytes(raw[:8], "little"):]).hexdigest()


def _whole(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_addnet_hash_is_the_tensor_data_sha256(tmp_path: Path) -> None:
    tensors = {"a.lora_down.weight": torch.arange(12.0).reshape(3, 4),
               "a.alpha": torch.tensor(2.0)}
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    save_file(tensors, str(one), metadata={"ss_output_name": "one"})
    save_file(tensors, str(two), metadata={"ss_output_name": "another name, longer"})
    assert hashing.addnet_sha256(one) == _after_header(one)
    assert hashing.addnet_sha256(two) == hashing.addnet_sha256(one)  # metadata is not hashed
    assert hashing.file_sha256(two) != hashing.file_sha256(one)
    assert hashing.a1111_lora_hash(one) == _after_header(one)[:12]
    # a pickle LoRA: A1111 hashes the whole file
    pt = tmp_path / "old.pt"
    torch.save(tensors, pt)
    assert hashing.a1111_lora_hash(pt) == _whole(pt)[:12]
    # kohya's metadata hash wins, as in A1111 1.10
    assert hashing.a1111_lora_hash(one, "ab" * 32) == "ab" * 6


def test_hash_cache_is_used_and_refreshed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    path = tmp_path / "x.safetensors"
    save_file({"t": torch.ones(5)}, str(path))
    first = hashing.addnet_sha256(path)
    full = hashing.file_sha256(path)
    entry = json.loads((paths.cache_dir() / "hashes.json").read_text())[str(path.resolve())]
    assert entry["addnet_sha256"] == first and entry["sha256"] == full  # one entry, both

    def no_read(*_: Any) -> str:
        raise AssertionError("hashed again")

    monkeypatch.setattr(hashing, "_sha256_from", no_read)
    assert hashing.addnet_sha256(path) == first
    assert hashing.file_sha256(path) == full
    monkeypatch.undo()
    save_file({"t": torch.zeros(5)}, str(path))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert hashing.addnet_sha256(path) == _after_header(path) != first


def test_addnet_hash_refuses_a_file_without_a_header(tmp_path: Path) -> None:
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x02")
    with pytest.raises(OSError):
        hashing.addnet_sha256(short)
    lying = tmp_path / "lying.safetensors"
    lying.write_bytes((10_000).to_bytes(8, "little") + b"{}")
    with pytest.raises(OSError):
        hashing.addnet_sha256(lying)


def test_vae_and_embedding_hashes(tmp_path: Path) -> None:
    path = tmp_path / "v.safetensors"
    save_file({"t": torch.ones(3)}, str(path))
    assert hashing.a1111_vae_hash(path) == _whole(path)[:10]
    assert hashing.a1111_embedding_hash(path) == _whole(path)[:12]  # whole file, not addnet


def test_apply_loras_returns_a1111_hashes(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_models["sd1"], local_files_only=True)
    weight = module(pipe.unet, LINEAR).weight
    state = keyed(kohya("lora_unet_", LINEAR), lora_layer(Rand(1), weight, 2, 2.0))
    save_file(state, str(tmp_path / "plain.safetensors"))
    save_file(state, str(tmp_path / "kohya.safetensors"),
              metadata={"sshs_model_hash": "0123456789abcdef" * 4})
    save_file(state, str(tmp_path / "junk.safetensors"), metadata={"sshs_model_hash": "x, y"})
    torch.save(state, tmp_path / "pickled.pt")
    settings = EngineSettings(lora_dirs=(str(tmp_path),))
    specs = tuple(LoraSpec(n, 0.5) for n in ("plain", "kohya", "junk", "pickled"))
    hashes = apply_loras(pipe, specs, settings)
    assert hashes == {
        "plain": _after_header(tmp_path / "plain.safetensors")[:12],
        "kohya": "0123456789ab",
        "junk": _after_header(tmp_path / "junk.safetensors")[:12],  # not a digest: ignored
        "pickled": _whole(tmp_path / "pickled.pt")[:12],
    }
    apply_loras(pipe, (), settings)


def test_ti_hashes_of_the_embeddings_a_prompt_uses(tiny_models: dict[str, Path],
                                                    tmp_path: Path) -> None:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_models["sd1"], local_files_only=True)
    width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    rand = Rand(2)
    save_file({"emb_params": rand(2, width)}, str(tmp_path / "shinystyle.safetensors"))
    torch.save({"string_to_param": {"*": rand(1, width)}}, tmp_path / "badhands.pt")
    save_file({"emb_params": rand(1, width)}, str(tmp_path / "unused.safetensors"))
    assert apply_embeddings(pipe, EngineSettings(embedding_dirs=(str(tmp_path),))) == {}
    found = embedding_hashes(pipe, ["a (shinystyle:1.2) cat", "badhands, blurry"])
    assert list(found) == ["shinystyle", "badhands"]
    assert found == {"shinystyle": _whole(tmp_path / "shinystyle.safetensors")[:12],
                     "badhands": _whole(tmp_path / "badhands.pt")[:12]}
    assert embedding_hashes(pipe, ["a cat", ""]) == {}
