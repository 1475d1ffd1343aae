"""What the person typed or pasted -> the one file to fetch (:class:`DownloadSource`).

- a catalogue id (``sd15``): everything known from the catalogue, no network;
- a Hugging Face repository and file: ``org/repo file.safetensors``, ``org/repo/sub/file.ext``,
  ``https://huggingface.co/org/repo/blob/main/file`` or ``.../resolve/main/file``; a repository
  alone when it has exactly one model file at its top. The size and sha256 come from the hub
  (``huggingface_hub.get_hf_file_metadata``: an LFS file's ETag is its sha256). ``HF_ENDPOINT``
  is honoured (the tests run a fake hub on 127.0.0.1);
- a Civitai download link (``https://civitai.com/api/download/models/ID``, or a model page with
  ``?modelVersionId=ID``): Civitai's API (``/api/v1/model-versions/ID``) gives the file's
  SHA256, the model's type and the file's name when it answers; the server's
  Content-Disposition names the file (sanitised). ``SDSTUDIO_CIVITAI_URL`` replaces
  civitai.com (the tests run a fake one on 127.0.0.1);
- any other https URL to a file.

Tokens (settings) go in an Authorization header, only to their own site.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sdstudio.core import safejson
from sdstudio.core.catalogue import Catalogue, CatalogueEntry, load_catalogue
from sdstudio.core.settings import DownloadSettings
from sdstudio.downloads.transfer import check_url, open_url, safe_filename
from sdstudio.downloads.types import (
    OFFLINE_MESSAGE,
    DownloadError,
    DownloadSource,
    check_kind,
    is_offline,
)

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
HF_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})
CIVITAI_HOSTS = frozenset({"civitai.com", "www.civitai.com"})
CIVITAI_DEFAULT = "https://civitai.com"
MAX_CIVITAI_JSON = 4 * 1024 * 1024
# Civitai's model types -> SD Studio's kinds
CIVITAI_KINDS = {"checkpoint": "checkpoint", "lora": "lora", "locon": "lora", "dora": "lora",
                 "lycoris": "lora", "textualinversion": "embedding", "vae": "vae",
                 "controlnet": "controlnet", "upscaler": "upscaler"}
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# file names diffusers and PEFT give every model: the repository's name says more
GENERIC_NAMES = frozenset({"diffusion_pytorch_model", "pytorch_lora_weights", "model",
                           "pytorch_model"})


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def guess_kind(text: str) -> str:
    """The kind of model a repository or file name suggests (``checkpoint`` when nothing
    does); the person can always say otherwise (``--kind``)."""
    low = text.lower()
    if any(w in low for w in ("controlnet", "control_v", "t2i-adapter", "t2iadapter",
                              "ip-adapter", "ip_adapter")):
        return "controlnet"
    if "lora" in low:
        return "lora"
    if any(w in low for w in ("esrgan", "upscal", "swinir", "4x_", "4x-", "x4plus")):
        return "upscaler"
    if "taesd" in low:
        return "vae_approx"
    if "vae" in low and "baked" not in low and "novae" not in low:
        return "vae"
    if "embedding" in low or "textual_inversion" in low or "textual-inversion" in low:
        return "embedding"
    return "checkpoint"


def _hf_token(settings: DownloadSettings | None) -> str | None:
    if settings is not None and settings.hf_token:
        return settings.hf_token
    try:
        from huggingface_hub import get_token

        return get_token()  # HF_TOKEN or `hf auth login`
    except Exception:
        return None


def _auth(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("Authorization", f"Bearer {token}"),) if token else ()


def _hf_url(repo: str, file: str, revision: str) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo, file, revision=revision, endpoint=hf_endpoint())


def from_entry(entry: CatalogueEntry, settings: DownloadSettings | None = None) -> DownloadSource:
    """A catalogue entry's source; no network."""
    if entry.hf_repo:
        url = _hf_url(entry.hf_repo, entry.hf_file, entry.revision)
        headers = _auth(_hf_token(settings))
    else:
        url, headers = entry.url, ()
        host = (urlsplit(url).hostname or "").lower()
        if _is_civitai(host) and settings is not None and settings.civitai_token:
            headers = _auth(settings.civitai_token)
    return DownloadSource(url=url, filename=entry.filename, kind=entry.kind, sha256=entry.sha256,
                          size=entry.size, licence=entry.licence, headers=headers,
                          label=entry.name)


def _hub_error(exc: BaseException, what: str) -> DownloadError:
    name = type(exc).__name__
    if name == "GatedRepoError":
        return DownloadError(f"{what} is gated: accept its terms on the Hugging Face website and "
                             "set a Hugging Face token (Models…, Download tab, Tokens)")
    if name in ("RepositoryNotFoundError", "RevisionNotFoundError"):
        return DownloadError(f"{what}: no such repository or revision on the hub (or it is "
                             "private: set a Hugging Face token)")
    if name in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
        return DownloadError(f"{what}: no such file in the repository")
    first = (str(exc).splitlines() or [""])[0][:200]
    reason = f"{name}: {first}" if first else name
    return DownloadError(f"{what}: the hub cannot be reached ({reason})")


def from_hub(repo: str, file: str, *, revision: str = "main", kind: str | None = None,
             settings: DownloadSettings | None = None,
             catalogue: Catalogue | None = None) -> DownloadSource:
    """A file of a Hugging Face repository; asks the hub for its size and sha256."""
    if not _REPO_RE.fullmatch(repo) or ".." in repo:
        raise DownloadError(f"not a Hugging Face repository id (org/name): {repo!r}")
    if file.startswith("/") or any(p in ("", ".", "..") for p in file.split("/")):
        raise DownloadError(f"not a file in a repository: {file!r}")
    for entry in catalogue or ():  # a catalogued file: its pinned revision, size and sha256
        if entry.hf_repo == repo and entry.hf_file == file and revision in (entry.revision,
                                                                             "main"):
            source = from_entry(entry, settings)
            return source if kind is None else _with(source, kind=kind)
    if is_offline():
        raise DownloadError(OFFLINE_MESSAGE)
    from huggingface_hub import get_hf_file_metadata

    token = _hf_token(settings)
    url = _hf_url(repo, file, revision)
    try:
        meta = get_hf_file_metadata(url, token=token or False, endpoint=hf_endpoint())
    except Exception as exc:
        raise _hub_error(exc, f"{repo}/{file}") from None
    etag = (meta.etag or "").lower()
    sha256 = etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None  # an LFS file's sha256
    filename = safe_filename(PurePosixPath(file).name, "")
    if not filename:
        raise DownloadError(f"{file}: not a model file (.safetensors, .ckpt, .pt, .pth, .bin)")
    stem, _, suffix = filename.partition(".")
    if stem in GENERIC_NAMES:  # named for the repository, as the catalogue names them
        filename = safe_filename(f"{repo.split('/')[1]}.{suffix}", filename)
    return DownloadSource(url=url, filename=filename, kind=kind or guess_kind(f"{repo}/{file}"),
                          sha256=sha256, size=meta.size, headers=_auth(token),
                          label=f"{repo}/{file}")


def _with(source: DownloadSource, **changes: Any) -> DownloadSource:
    import dataclasses

    return dataclasses.replace(source, **changes)


def repo_model_file(repo: str, revision: str = "main",
                    settings: DownloadSettings | None = None) -> str:
    """The one model file at the top of a repository (DownloadError naming the candidates
    when there are several, or none)."""
    if not _REPO_RE.fullmatch(repo) or ".." in repo:
        raise DownloadError(f"not a Hugging Face repository id (org/name): {repo!r}")
    if is_offline():
        raise DownloadError(OFFLINE_MESSAGE)
    from huggingface_hub import HfApi

    try:
        files = HfApi(endpoint=hf_endpoint(), token=_hf_token(settings) or False
                      ).list_repo_files(repo, revision=revision)
    except Exception as exc:
        raise _hub_error(exc, repo) from None
    top = [f for f in files if "/" not in f and f.lower().endswith(_MODEL_SUFFIXES)]
    preferred = [f for f in top if f.lower().endswith(".safetensors")] or top
    if len(preferred) == 1:
        return preferred[0]
    if not preferred:
        raise DownloadError(f"{repo} has no model file at its top (a diffusers folder? "
                            "name the file: org/repo path/to/file.safetensors)")
    shown = ", ".join(sorted(preferred)[:6])
    raise DownloadError(f"{repo} has {len(preferred)} model files; name one: {shown}")


def _hf_link(parts: Any) -> tuple[str, str, str] | None:
    """(repo, revision, file) of a hub link ``/org/repo/(blob|resolve)/rev/path``."""
    host = (parts.hostname or "").lower()
    if host not in HF_HOSTS | {(urlsplit(hf_endpoint()).hostname or "").lower()}:
        return None
    bits = [unquote(b) for b in parts.path.split("/") if b]
    if len(bits) >= 5 and bits[2] in ("blob", "resolve"):
        return f"{bits[0]}/{bits[1]}", bits[3], "/".join(bits[4:])
    if host not in HF_HOSTS:  # a mirror's other addresses are plain URLs
        return None
    raise DownloadError("a Hugging Face link to one file looks like "
                        "https://huggingface.co/ORG/REPO/blob/main/FILE")


def civitai_base() -> str:
    """Civitai's address; ``SDSTUDIO_CIVITAI_URL`` replaces it (the tests' fake Civitai)."""
    return (os.environ.get("SDSTUDIO_CIVITAI_URL") or CIVITAI_DEFAULT).rstrip("/")


def _is_civitai(host: str) -> bool:
    return host in CIVITAI_HOSTS or host == (urlsplit(civitai_base()).hostname or "").lower()


def civitai_version(version: str, token: str = "") -> dict[str, Any] | None:
    """A model version's description from Civitai's API (``/api/v1/model-versions/ID``:
    its files with their SHA256, the model's type and name), parsed within limits; None when
    it cannot be had (the download then goes on without it)."""
    headers = {"User-Agent": "sdstudio-downloader", "Accept": "application/json",
               **dict(_auth(token))}
    try:
        response, conn = open_url(f"{civitai_base()}/api/v1/model-versions/{version}", headers)
        try:
            raw = response.read(MAX_CIVITAI_JSON + 1) if response.status == 200 else b""
        finally:
            conn.close()
        data = safejson.loads(raw, max_bytes=MAX_CIVITAI_JSON) if raw else None
    except Exception:  # a description is a bonus: any failure only means none
        return None
    return data if isinstance(data, dict) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _civitai_file(data: Mapping[str, Any], wanted: Mapping[str, str]) -> Mapping[str, Any]:
    """The file of a model version the link asks for (``type``, ``format``, ``size``, ``fp``
    in its query), else the primary one."""
    files = [f for f in data.get("files") or () if isinstance(f, dict)]

    def fits(f: Mapping[str, Any]) -> bool:
        meta = _mapping(f.get("metadata"))
        have = {"type": f.get("type"), **{k: meta.get(k) for k in ("format", "size", "fp")}}
        return all(str(have.get(k) or "").lower() == v.lower() for k, v in wanted.items())

    return (next((f for f in files if wanted and fits(f)), None)
            or next((f for f in files if f.get("primary") is True), None)
            or (files[0] if files else {}))


def _civitai(parts: Any, kind: str | None, settings: DownloadSettings | None) -> DownloadSource:
    version = None
    match = re.fullmatch(r"/api/download/models/(\d{1,12})/?", parts.path)
    if match:
        version = match.group(1)
    else:
        ids = parse_qs(parts.query).get("modelVersionId") or []
        if re.fullmatch(r"/models/\d{1,12}(/[^/]*)?/?", parts.path) and ids \
                and re.fullmatch(r"\d{1,12}", ids[0]):
            version = ids[0]
    if version is None:
        raise DownloadError("a Civitai link to download looks like "
                            "https://civitai.com/api/download/models/ID (the model page's "
                            "download button)")
    wanted = {k: v[0] for k, v in parse_qs(parts.query).items()
              if k in ("type", "format", "size", "fp") and re.fullmatch(r"[\w.-]{1,32}", v[0])}
    query = "&".join(f"{k}={v}" for k, v in wanted.items())
    url = f"{civitai_base()}/api/download/models/{version}" + (f"?{query}" if query else "")
    token = settings.civitai_token if settings is not None else ""
    if is_offline():
        raise DownloadError(OFFLINE_MESSAGE)
    fallback = f"civitai-{version}.safetensors"
    filename, sha256, label = fallback, None, f"Civitai model version {version}"
    data = civitai_version(version, token)
    if data is not None:
        found = _civitai_file(data, wanted)
        filename = safe_filename(str(found.get("name") or ""), fallback)
        hashes = _mapping(found.get("hashes"))
        digest = str(hashes.get("SHA256") or "").lower()
        sha256 = digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None
        model = _mapping(data.get("model"))
        kind = kind or CIVITAI_KINDS.get(str(model.get("type") or "").lower())
        title = " ".join(str(x) for x in (model.get("name"), data.get("name")) if x)
        label = "".join(c for c in title if c.isprintable())[:120] or label
    return DownloadSource(url=url, filename=filename, kind=kind or "checkpoint",
                          sha256=sha256, headers=_auth(token), label=label,
                          name_from_server=True)


def resolve(text: str, *, kind: str | None = None, settings: DownloadSettings | None = None,
            catalogue: Catalogue | None = None) -> DownloadSource:
    """The file ``text`` names (see the module's docstring). ``kind`` overrides the kind
    (catalogue entries have their own; elsewhere it is guessed from the name). DownloadError
    (one line) when ``text`` names nothing that can be fetched."""
    if kind is not None:
        check_kind(kind)
    text = text.strip()
    if not text or len(text) > 2000 or any(ord(c) < 32 for c in text):
        raise DownloadError("name a catalogue entry, a Hugging Face repository and file, or a URL")
    cat = catalogue if catalogue is not None else load_catalogue()
    entry = cat.get(text)
    if entry is not None:
        source = from_entry(entry, settings)
        return source if kind is None else _with(source, kind=kind)
    if re.match(r"(?i)[a-z][a-z0-9+.-]*://", text):
        parts = urlsplit(text)
        hub = _hf_link(parts)
        if hub is not None:
            repo, revision, file = hub
            return from_hub(repo, file, revision=revision, kind=kind, settings=settings,
                            catalogue=cat)
        if _is_civitai((parts.hostname or "").lower()):
            return _civitai(parts, kind, settings)
        check_url(text)
        filename = safe_filename(unquote(PurePosixPath(parts.path).name), "")
        return DownloadSource(url=text, filename=filename or "download.safetensors",
                              kind=kind or guess_kind(parts.path), label=filename or text,
                              name_from_server=not filename)
    repo, _, file = text.partition(" ")
    file = file.strip()
    if not file and repo.count("/") >= 2:  # org/repo/path/file.ext
        org, name, file = repo.split("/", 2)
        repo = f"{org}/{name}"
    if not _REPO_RE.fullmatch(repo):
        raise DownloadError(f"{text!r} is neither a catalogue id (see: sdstudio download "
                            "--list) nor a Hugging Face repository (org/name) nor a URL")
    if not file:
        file = repo_model_file(repo, settings=settings)
    return from_hub(repo, file, kind=kind, settings=settings, catalogue=cat)


def catalogue_sources(catalogue: Catalogue,
                      settings: DownloadSettings | None = None) -> Mapping[str, DownloadSource]:
    """Every catalogue entry's source by id (no network)."""
    return {e.id: from_entry(e, settings) for e in catalogue}
