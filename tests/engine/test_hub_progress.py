"""Hub ids online: the download reports its progress through the engine's LoadProgress events.
(No network here: snapshot_download is replaced by a fake that drives the given tqdm class the
way huggingface_hub does and returns a local model folder.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sdstudio.core.events import LoadProgress, ModelReady
from sdstudio.engine import models


def test_hub_download_progress_reaches_load_events(
        tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls: list[dict[str, Any]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        if kwargs.get("local_files_only"):
            raise FileNotFoundError("not cached")
        bar_class = kwargs["tqdm_class"]
        with bar_class(total=4, desc="Fetching 4 files") as files:
            for _ in range(4):
                files.update(1)
        with bar_class(total=3 * 2**20, unit="B", unit_scale=True, desc="unet") as size:
            size.update(2**20)
        return str(tiny_model)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=1.5: True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)

    from sdstudio.engine import Engine

    events: list[Any] = []
    ready = Engine().load("someone/some-model", events.append)

    assert isinstance(ready, ModelReady) and ready.name == "someone/some-model"
    assert calls[-1]["repo_id"] == "someone/some-model"
    texts = [(e.message, e.fraction) for e in events if isinstance(e, LoadProgress)]
    downloads = [(m, f) for m, f in texts if m.startswith("Downloading someone/some-model")]
    assert ("Downloading someone/some-model: Fetching 4 files: 4/4", 1.0) in downloads
    assert ("Downloading someone/some-model: unet: 1.0/3.0 MiB", pytest.approx(1 / 3)) in downloads
    assert all(f is None or 0.0 <= f <= 1.0 for _, f in downloads)


def test_hub_id_offline_fails_at_once_without_download(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def forbidden(*args: Any, **kwargs: Any) -> str:
        if kwargs.get("local_files_only"):
            raise FileNotFoundError("not cached")
        raise AssertionError("must not download while offline")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", forbidden)
    from sdstudio.core.errors import ModelError
    from sdstudio.core.settings import EngineSettings

    with pytest.raises(ModelError, match="hub is off"):
        models.resolve("someone/some-model", EngineSettings())
