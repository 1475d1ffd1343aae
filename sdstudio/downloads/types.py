"""The values the download code passes around (see :mod:`sdstudio.downloads`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sdstudio.core import paths
from sdstudio.core.catalogue import Licence, check_filename
from sdstudio.core.errors import SDStudioError

__all__ = ["DownloadError", "DownloadProgress", "DownloadSource", "Licence", "is_offline"]


class DownloadError(SDStudioError):
    """A download cannot start or did not finish: one line saying why."""


_TRUE = ("1", "true", "yes", "on")


def is_offline() -> bool:
    """Whether the person asked SD Studio to stay offline (``HF_HUB_OFFLINE``,
    ``SDSTUDIO_OFFLINE``, or ``TRANSFORMERS_OFFLINE`` as huggingface_hub reads it, set to
    1/true/yes/on): downloads are then refused at once."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE
               for var in ("HF_HUB_OFFLINE", "SDSTUDIO_OFFLINE", "TRANSFORMERS_OFFLINE"))


OFFLINE_MESSAGE = ("offline (HF_HUB_OFFLINE or SDSTUDIO_OFFLINE is set): nothing is downloaded; "
                   "unset it to download models")


def check_kind(kind: str) -> str:
    """``kind`` if it is a :data:`paths.MODEL_KINDS` key, else DownloadError."""
    if kind not in paths.MODEL_KINDS:
        raise DownloadError(f"unknown kind of model {kind!r}; one of: "
                            + ", ".join(paths.MODEL_KINDS))
    return kind


@dataclass(frozen=True)
class DownloadSource:
    url: str  # the https URL fetched (after resolving hub ids)
    filename: str  # plain file name (validated: no separators, no '..')
    kind: str  # paths.MODEL_KINDS key
    sha256: str | None = None
    size: int | None = None
    licence: Licence | None = None
    headers: tuple[tuple[str, str], ...] = ()  # e.g. auth; never printed
    label: str = ""  # what to show
    # the server's Content-Disposition names the file (Civitai): ``filename`` is then only
    # the fallback and the name of the partial download
    name_from_server: bool = False

    def __post_init__(self) -> None:
        try:
            check_filename(self.filename)
        except ValueError as exc:
            raise DownloadError(str(exc)) from None
        check_kind(self.kind)
        if self.sha256 is not None:
            object.__setattr__(self, "sha256", self.sha256.lower())
            if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
                raise DownloadError("a sha256 is 64 hexadecimal digits")
        if self.size is not None and self.size < 0:
            raise DownloadError("a file size cannot be negative")

    def __repr__(self) -> str:  # headers carry tokens: never in a log
        return (f"DownloadSource(url={self.url!r}, filename={self.filename!r}, "
                f"kind={self.kind!r}, sha256={self.sha256!r}, size={self.size!r}, "
                f"headers=<{len(self.headers)} hidden>)")

    @property
    def title(self) -> str:
        return self.label or self.filename


@dataclass(frozen=True)
class DownloadProgress:
    done: int
    total: int | None
    bytes_per_s: float
    eta_s: float | None
