"""The shipped model catalogue is consistent (no network), and a damaged one is refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from sdstudio.core import paths
from sdstudio.core.catalogue import (
    ARCHITECTURES,
    CatalogueError,
    load_catalogue,
    parse_catalogue,
)

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def _raw() -> dict[str, Any]:
    text = (paths.resources_dir() / "model_catalogue.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def test_shipped_catalogue_is_consistent() -> None:
    catalogue = load_catalogue()
    ids = [e.id for e in catalogue]
    assert len(ids) == len(set(ids))
    folders: dict[tuple[str, str], str] = {}
    for e in catalogue:
        assert e.kind in paths.MODEL_KINDS
        assert e.architecture in ARCHITECTURES
        assert e.filename.lower().endswith(MODEL_SUFFIXES), e.id
        if e.sha256 is not None:
            assert len(e.sha256) == 64 and set(e.sha256) <= set("0123456789abcdef")
        assert e.size is None or e.size > 1_000_000  # real model files, not pointers
        assert e.licence.name and urlsplit(e.licence.url).scheme == "https"
        if e.hf_repo:
            assert e.hf_file and not e.url
        else:
            assert urlsplit(e.url).scheme == "https"
        # two entries never land on the same file in the same folder
        key = (e.kind, e.filename.lower())
        assert key not in folders, f"{e.id} and {folders[key]} share {e.filename}"
        folders[key] = e.id


def test_catalogue_covers_what_the_issue_asks() -> None:
    catalogue = load_catalogue()
    by_kind_arch = {(e.kind, e.architecture) for e in catalogue}
    for need in [("checkpoint", "sd1"), ("checkpoint", "sd1-inpaint"), ("checkpoint", "sdxl"),
                 ("checkpoint", "sdxl-inpaint"), ("vae", "sdxl"), ("lora", "sd1"),
                 ("lora", "sdxl"), ("controlnet", "sd1"), ("controlnet", "sdxl")]:
        assert need in by_kind_arch, need
    assert catalogue.of_kind("upscaler")
    assert len(catalogue.of_kind("controlnet")) >= 4


def test_architectures_are_the_engines() -> None:
    from sdstudio.engine.arch import ARCHS

    assert set(ARCHITECTURES) == {*ARCHS, "any"}


def test_every_entry_resolves_to_an_https_source_offline() -> None:
    from sdstudio.downloads.sources import from_entry

    for entry in load_catalogue():
        source = from_entry(entry)  # no network
        assert urlsplit(source.url).scheme == "https"
        assert source.filename == entry.filename and source.kind == entry.kind
        assert source.sha256 == entry.sha256 and source.size == entry.size
        if entry.hf_repo:
            assert source.url == (f"https://huggingface.co/{entry.hf_repo}/resolve/"
                                  f"{entry.revision}/{entry.hf_file}")


def _bad(change: Any) -> dict[str, Any]:
    data = _raw()
    entry = copy.deepcopy(data["entries"][0])
    change(entry)
    data["entries"] = [entry]
    return data


@pytest.mark.parametrize("change, message", [
    (lambda e: e.update(kind="plugin"), "unknown kind"),
    (lambda e: e.update(architecture="sd9"), "unknown architecture"),
    (lambda e: e.update(sha256="ABC"), "sha256"),
    (lambda e: e.update(size=-1), "size"),
    (lambda e: e.update(size="4 GB"), "size"),
    (lambda e: e.update(id="../x"), "id"),
    (lambda e: e.update(filename="../../evil.safetensors"), "filename"),
    (lambda e: e.update(filename="a/b.safetensors"), "filename"),
    (lambda e: e.update(source={"url": "http://example.com/m.safetensors"}), "https"),
    (lambda e: e.update(source={"hf_repo": "a/b", "file": "../x.ckpt"}), "file"),
    (lambda e: e.update(source={"hf_repo": "a/b", "file": "x.ckpt", "url": "https://x"}),
     "either"),
    (lambda e: e.update(source={"hf_repo": "../b", "file": "x.ckpt"}), "hf_repo"),
    (lambda e: e["licence"].pop("needs_acceptance"), "licence"),
    (lambda e: e["licence"].update(url="javascript:alert(1)"), "https"),
    (lambda e: e.update(name="two\nlines"), "one line"),
])
def test_damaged_entries_are_refused_in_one_line(change: Any, message: str) -> None:
    with pytest.raises(CatalogueError, match=message) as err:
        parse_catalogue(_bad(change))
    assert "\n" not in str(err.value)


def test_duplicate_ids_and_damaged_files(tmp_path: Path) -> None:
    data = _raw()
    data["entries"] = data["entries"][:1] * 2
    with pytest.raises(CatalogueError, match="twice"):
        parse_catalogue(data)
    with pytest.raises(CatalogueError, match="no list"):
        parse_catalogue([])
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 10_000 + "]" * 10_000)
    with pytest.raises(CatalogueError, match="cannot be read"):
        load_catalogue(deep)
    with pytest.raises(CatalogueError, match="cannot be read"):
        load_catalogue(tmp_path / "missing.json")
