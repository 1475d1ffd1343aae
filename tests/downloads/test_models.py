"""Downloaded model files are checked by the safe loaders before they are listed: a catalogue
entry end to end into its folder (and the engine finds it), a hostile pickle offered as a
checkpoint (downloaded, refused, never listed), files of the wrong kind."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from sdstudio.core import paths
from sdstudio.core.addons import list_addons
from sdstudio.core.catalogue import Catalogue, parse_catalogue
from sdstudio.core.errors import ModelError
from sdstudio.downloads import DownloadError, DownloadSource, download, resolve
from sdstudio.engine.verify import verify_model_file
from tests.downloads.helpers import Server
from tests.engine._ldm_fixtures import write_single_file


@pytest.fixture(scope="module")
def checkpoint_file(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                    ) -> Path:
    return write_single_file(tiny_models["sd1"], tmp_path_factory.mktemp("ckpt") / "t.safetensors")


def lora_bytes(tmp_path: Path) -> bytes:
    import torch
    from safetensors.torch import save_file

    layer = "lora_unet_down_blocks_0_attentions_0_proj_in"
    out = tmp_path / "lora.safetensors"
    save_file({f"{layer}.lora_down.weight": torch.zeros(4, 32),
               f"{layer}.lora_up.weight": torch.zeros(32, 4), f"{layer}.alpha": torch.tensor(4.0)},
              str(out))
    return out.read_bytes()


def _entry(entry_id: str, kind: str, repo: str, file: str, data: bytes, **extra: Any
           ) -> dict[str, Any]:
    return {"id": entry_id, "name": entry_id, "kind": kind, "architecture": "sd1",
            "description": "test entry", "source": {"hf_repo": repo, "file": file},
            "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "licence": {"name": "Test Licence", "url": "https://example.com/licence",
                        "needs_acceptance": True}, **extra}


def _verify(kind: str) -> Any:
    return lambda path: verify_model_file(path, kind)


def test_catalogue_entries_end_to_end(fake_hub: Server, checkpoint_file: Path,
                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    from sdstudio import cli
    from sdstudio.core.settings import EngineSettings
    from sdstudio.engine import library, models

    ckpt, lora = checkpoint_file.read_bytes(), lora_bytes(tmp_path)
    fake_hub.hub["tester/tiny-sd"] = {"tiny-sd1.safetensors": ckpt}
    fake_hub.hub["tester/tiny-lora"] = {"pytorch_lora_weights.safetensors": lora}
    catalogue: Catalogue = parse_catalogue({"entries": [
        _entry("tiny-sd", "checkpoint", "tester/tiny-sd", "tiny-sd1.safetensors", ckpt),
        _entry("tiny-lora", "lora", "tester/tiny-lora", "pytorch_lora_weights.safetensors",
               lora, filename="tiny-lora.safetensors")]})

    source = resolve("tiny-sd", catalogue=catalogue)  # no network for a catalogue entry
    assert fake_hub.requests == []
    with pytest.raises(DownloadError, match=r"Test Licence licence.*example.com/licence"):
        download(source, verify=_verify("checkpoint"))
    path = download(source, verify=_verify("checkpoint"), accept_licence=True)
    assert path == paths.model_dir("checkpoint") / "tiny-sd1.safetensors"
    assert path.read_bytes() == ckpt
    listed = library.scan(paths.search_dirs("checkpoint", EngineSettings()))
    assert [(e.name, e.arch, e.short_hash) for e in listed] == [
        ("tiny-sd1", "sd1", hashlib.sha256(ckpt).hexdigest()[:10])]  # hash recorded
    found = models.resolve("tiny-sd1", EngineSettings())  # the engine finds it by name
    assert found.path == path.resolve()
    capsys.readouterr()
    assert cli.main(["models"]) == 0  # and `sdstudio models` lists it
    assert capsys.readouterr().out.startswith("tiny-sd1  sd1")

    lora_path = download(resolve("tiny-lora", catalogue=catalogue), verify=_verify("lora"),
                         accept_licence=True)
    assert lora_path == paths.model_dir("lora") / "tiny-lora.safetensors"
    assert [a.name for a in list_addons("lora", paths.search_dirs("lora"))] == ["tiny-lora"]
    again = download(resolve("tiny-lora", catalogue=catalogue), accept_licence=True)
    assert again == lora_path and len(list(lora_path.parent.iterdir())) == 1  # already there


class _Mkdir:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.target),))


def test_hostile_pickle_is_refused_and_never_listed(server: Server, online: None,
                                                    tmp_path: Path) -> None:
    from sdstudio.engine import library

    marker = tmp_path / "pwned"
    evil = pickle.dumps({"state_dict": {"x": _Mkdir(marker)}}, protocol=2)
    url = server.add("/evil.ckpt", evil)
    source = DownloadSource(url=url, filename="evil.ckpt", kind="checkpoint")
    with pytest.raises(DownloadError, match=r"evil.ckpt was downloaded but refused .*"
                                            r"it was deleted") as err:
        download(source, verify=_verify("checkpoint"))
    assert "\n" not in str(err.value)
    assert not marker.exists()  # nothing of it ran
    folder = paths.model_dir("checkpoint")
    assert [p.name for p in folder.rglob("*") if p.is_file()] == []
    assert library.scan(paths.search_dirs("checkpoint")) == []


def test_files_of_the_wrong_kind_are_refused(checkpoint_file: Path, tmp_path: Path) -> None:
    lora = tmp_path / "l.safetensors"
    lora.write_bytes(lora_bytes(tmp_path))
    assert verify_model_file(checkpoint_file, "checkpoint") == "checkpoint (sd1)"
    assert verify_model_file(lora, "lora") == "LoRA (1 layers)"
    with pytest.raises(ModelError, match="not a Stable Diffusion checkpoint"):
        verify_model_file(lora, "checkpoint")
    with pytest.raises(ModelError, match="is not a LoRA"):
        verify_model_file(checkpoint_file, "lora")
    with pytest.raises(ModelError, match="not a ControlNet"):
        verify_model_file(lora, "controlnet")
    page = tmp_path / "page.safetensors"
    page.write_bytes(b"<!DOCTYPE html><html>sign in</html>")
    for kind in paths.MODEL_KINDS:
        with pytest.raises(ModelError, match="web page"):
            verify_model_file(page, kind)


def test_upscaler_and_embedding_files(tmp_path: Path) -> None:
    import torch

    from sdstudio.engine.tiny_upscalers import build_upscaler

    up = build_upscaler(tmp_path / "4x-tiny.pth")
    assert verify_model_file(up, "upscaler").startswith("upscaler (ESRGAN 4x")
    emb = tmp_path / "emb.pt"
    torch.save({"string_to_param": {"*": torch.zeros(2, 768)}}, emb)
    assert verify_model_file(emb, "embedding") == "embedding (2 vectors)"
    with pytest.raises(ModelError):
        verify_model_file(emb, "upscaler")
