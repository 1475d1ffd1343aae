"""What people type -> DownloadSource (catalogue ids, hub repos and links, Civitai, URLs),
against a fake Hugging Face hub on 127.0.0.1 (HF_ENDPOINT)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sdstudio.core.catalogue import parse_catalogue
from sdstudio.core.settings import DownloadSettings
from sdstudio.downloads import DownloadError, download, resolve
from sdstudio.downloads.transfer import content_disposition_name, safe_filename
from tests.downloads.helpers import Server, payload

DATA = payload(50_000, seed=3)
SHA = hashlib.sha256(DATA).hexdigest()
EMPTY = parse_catalogue({"entries": []})


def test_repo_and_file_from_the_hub(fake_hub: Server) -> None:
    fake_hub.hub["someone/tiny"] = {"tiny.safetensors": DATA}
    for text in ("someone/tiny tiny.safetensors", "someone/tiny/tiny.safetensors",
                 f"{fake_hub.base}/someone/tiny/blob/main/tiny.safetensors",
                 "https://huggingface.co/someone/tiny/resolve/main/tiny.safetensors?download=1"):
        source = resolve(text, catalogue=EMPTY)
        assert source.url == f"{fake_hub.base}/someone/tiny/resolve/main/tiny.safetensors"
        assert (source.sha256, source.size) == (SHA, len(DATA))  # from X-Linked-Etag / -Size
        assert source.kind == "checkpoint" and source.filename == "tiny.safetensors"


def test_repo_alone_uses_its_one_model_file(fake_hub: Server) -> None:
    fake_hub.hub["someone/lora-pack"] = {"README.md": b"hi", "style-lora.safetensors": DATA}
    source = resolve("someone/lora-pack", catalogue=EMPTY)
    assert source.filename == "style-lora.safetensors" and source.kind == "lora"  # guessed
    fake_hub.hub["someone/many"] = {"a.safetensors": DATA, "b.safetensors": DATA}
    with pytest.raises(DownloadError, match=r"2 model files; name one: a.safetensors, b"):
        resolve("someone/many", catalogue=EMPTY)


def test_hub_errors_are_one_line(fake_hub: Server) -> None:
    with pytest.raises(DownloadError) as err:
        resolve("someone/missing file.safetensors", catalogue=EMPTY)
    assert "\n" not in str(err.value) and "someone/missing/file.safetensors" in str(err.value)
    for bad in ("someone/x ../../etc.safetensors", "../x file.ckpt", "not a thing at all",
                "ftp://example.com/x.ckpt", "https://huggingface.co/only-org"):
        with pytest.raises(DownloadError):
            resolve(bad, catalogue=EMPTY)


def test_hub_token_goes_to_the_hub_only(fake_hub: Server) -> None:
    fake_hub.hub["someone/gated"] = {"g.safetensors": DATA}
    source = resolve("someone/gated g.safetensors", catalogue=EMPTY,
                     settings=DownloadSettings(hf_token="hf_secret"))
    assert dict(source.headers) == {"Authorization": "Bearer hf_secret"}
    assert "hf_secret" not in repr(source) and "hf_secret" not in repr(
        DownloadSettings(hf_token="hf_secret"))
    head = [{k.lower(): v for k, v in h.items()} for m, p, h in fake_hub.requests if m == "HEAD"]
    assert head and head[0].get("authorization") == "Bearer hf_secret"


def test_offline_resolution_of_a_hub_file_is_refused_at_once(server: Server,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline"):
        resolve("someone/tiny tiny.safetensors", catalogue=EMPTY)
    assert server.requests == []


@pytest.fixture
def fake_civitai(server: Server, online: None, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setenv("SDSTUDIO_CIVITAI_URL", server.base)
    return server


def _version_json(sha: str) -> bytes:
    import json

    return json.dumps({
        "id": 12345, "name": "v2.0", "model": {"name": "Ink\x1b[31m Style", "type": "LORA"},
        "files": [
            {"name": "ink-style.pt", "type": "Model", "primary": False,
             "metadata": {"format": "PickleTensor"}, "hashes": {"SHA256": "AA" * 32}},
            {"name": "ink-style_v20.safetensors", "type": "Model", "primary": True,
             "metadata": {"format": "SafeTensor", "fp": "fp16"},
             "hashes": {"SHA256": sha.upper()}}]}).encode()


def test_civitai_link_with_the_api_description(fake_civitai: Server, tmp_path: Path) -> None:
    fake_civitai.add("/api/v1/model-versions/12345", _version_json(SHA))
    fake_civitai.add("/api/download/models/12345", DATA,
                     disposition='attachment; filename="ink-style_v20.safetensors"')
    link = ("https://civitai.com/api/download/models/12345?type=Model&format=SafeTensor"
            "&token=pasted")
    source = resolve(link, settings=DownloadSettings(civitai_token="c1"), catalogue=EMPTY)
    assert source.url == f"{fake_civitai.base}/api/download/models/12345?type=Model&format=" \
                         "SafeTensor"  # a pasted token is not kept in the URL
    assert dict(source.headers) == {"Authorization": "Bearer c1"}
    assert (source.kind, source.sha256, source.filename) == (
        "lora", SHA, "ink-style_v20.safetensors")  # from the API: type, SHA256, name
    assert source.label == "Ink[31m Style v2.0"  # no control characters
    api = [h for _, p, h in fake_civitai.requests if p.startswith("/api/v1/")]
    assert api and api[0].get("Authorization") == "Bearer c1"
    path = download(source, dest_dir=tmp_path)
    assert path.name == "ink-style_v20.safetensors" and path.read_bytes() == DATA
    fake_civitai.add("/api/v1/model-versions/777", _version_json("0" * 64))  # wrong hash
    fake_civitai.add("/api/download/models/777", DATA)
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download(resolve(f"{fake_civitai.base}/api/download/models/777", catalogue=EMPTY),
                 dest_dir=tmp_path)


def test_civitai_without_a_description_still_downloads(fake_civitai: Server) -> None:
    source = resolve("https://civitai.com/models/4384/dreamshaper?modelVersionId=128713",
                     catalogue=EMPTY, kind="checkpoint")  # the API answers 404 here
    assert source.url == f"{fake_civitai.base}/api/download/models/128713"
    assert (source.filename, source.sha256, source.name_from_server) == (
        "civitai-128713.safetensors", None, True)
    with pytest.raises(DownloadError, match="download button"):
        resolve("https://civitai.com/models/4384", catalogue=EMPTY)


def test_civitai_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDSTUDIO_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline"):
        resolve("https://civitai.com/api/download/models/1", catalogue=EMPTY)


def test_server_names_the_file_sanitised(server: Server, online: None, tmp_path: Path) -> None:
    from sdstudio.downloads import DownloadSource

    url = server.add("/api/download/models/9", DATA,
                     disposition='attachment; filename="../../.bashrc\\r\\n evil.safetensors"')
    source = DownloadSource(url=url, filename="civitai-9.safetensors", kind="lora",
                            name_from_server=True)
    path = download(source, dest_dir=tmp_path)
    assert path.parent == tmp_path and path.name == "bashrcrn evil.safetensors"
    server.add("/api/download/models/10", DATA, disposition="attachment; filename=run.sh")
    source = DownloadSource(url=server.url("/api/download/models/10"),
                            filename="civitai-10.safetensors", kind="lora",
                            name_from_server=True)
    assert download(source, dest_dir=tmp_path).name == "civitai-10.safetensors"  # fallback


@pytest.mark.parametrize("header, name", [
    ('attachment; filename="model.safetensors"', "model.safetensors"),
    ("attachment; filename*=UTF-8''na%C3%AFve%20lora.safetensors", "naïve lora.safetensors"),
    ('attachment; filename="a\\"b.ckpt"', 'a"b.ckpt'),
    (None, None),
])
def test_content_disposition(header: str | None, name: str | None) -> None:
    assert content_disposition_name(header) == name


@pytest.mark.parametrize("raw, safe", [
    ("../../x.safetensors", "x.safetensors"),
    ("C:\\Windows\\x.ckpt", "x.ckpt"),
    ("...hidden.pt", "hidden.pt"),
    ("naïve lora.safetensors", "na_ve lora.safetensors"),
    ("evil.exe", "fallback.safetensors"),
    ("..safetensors", "fallback.safetensors"),
    ("a" * 300 + ".pth", "a" * 140 + ".pth"),
])
def test_safe_filename(raw: str, safe: str) -> None:
    assert safe_filename(raw, "fallback.safetensors") == safe


def test_direct_url_and_kind() -> None:
    source = resolve("https://example.com/files/4x-UltraSharp.pth", catalogue=EMPTY)
    assert (source.filename, source.kind) == ("4x-UltraSharp.pth", "upscaler")
    source = resolve("https://example.com/get?id=3", catalogue=EMPTY, kind="vae")
    assert source.name_from_server and source.kind == "vae"
    with pytest.raises(DownloadError, match="unknown kind"):
        resolve("https://example.com/x.pth", catalogue=EMPTY, kind="plugin")


def test_tokens_are_saved_and_never_shown(home: Path) -> None:
    from sdstudio.core.settings import Settings, load_settings, save_settings

    settings = Settings(downloads=DownloadSettings(civitai_token="civ", hf_token="hf_x"))
    save_settings(settings)
    assert load_settings().downloads == settings.downloads
    assert "civ'" not in repr(load_settings()) and "hf_x" not in repr(load_settings())
    bad = Settings.from_dict({"downloads": {"hf_token": 5, "civitai_token": ["x"]}})
    assert bad.downloads == DownloadSettings()


def test_generic_file_names_take_the_repository_name(fake_hub: Server) -> None:
    fake_hub.hub["latent-consistency/lcm-lora-sdxl"] = {"pytorch_lora_weights.safetensors": DATA}
    source = resolve("latent-consistency/lcm-lora-sdxl", catalogue=EMPTY)
    assert (source.filename, source.kind) == ("lcm-lora-sdxl.safetensors", "lora")
    fake_hub.hub["someone/cn"] = {"diffusion_pytorch_model.fp16.safetensors": DATA}
    source = resolve("someone/cn diffusion_pytorch_model.fp16.safetensors", catalogue=EMPTY)
    assert source.filename == "cn.fp16.safetensors"


def test_a_catalogued_hub_file_is_the_catalogue_entry() -> None:
    from sdstudio.core.catalogue import load_catalogue

    source = resolve("https://huggingface.co/latent-consistency/lcm-lora-sdv1-5/blob/main/"
                     "pytorch_lora_weights.safetensors", catalogue=load_catalogue())
    entry = load_catalogue().get("lcm-lora-sd15")
    assert entry is not None and source.sha256 == entry.sha256  # no network: catalogued
    assert source.filename == "lcm-lora-sdv1-5.safetensors" and source.licence == entry.licence
    assert f"/resolve/{entry.revision}/" in source.url
