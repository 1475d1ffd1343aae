"""Model downloads: the only thing SD Studio fetches from the network, and only when the
person asks (nothing at import, start-up or in the background).

``resolve(text)`` turns a catalogue id, a Hugging Face repository and file, a hub link, a
Civitai link or an https URL into a :class:`DownloadSource`; ``download(source)`` fetches it
into SD Studio's folder for its kind (``paths.model_dir(kind)``): resumable, sha256 computed
and checked, the safe loader's ``verify`` run before it is moved into place, never over
another file. Pure Python: no Qt, no torch (``huggingface_hub`` only inside functions).
"""

from __future__ import annotations

from sdstudio.downloads.sources import guess_kind, resolve
from sdstudio.downloads.transfer import download
from sdstudio.downloads.types import (
    DownloadError,
    DownloadProgress,
    DownloadSource,
    Licence,
    is_offline,
)

__all__ = [
    "DownloadError",
    "DownloadProgress",
    "DownloadSource",
    "Licence",
    "download",
    "guess_kind",
    "is_offline",
    "resolve",
]
