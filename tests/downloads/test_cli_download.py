"""``sdstudio download`` as a person runs it (a subprocess), against the fake hub and file
server on 127.0.0.1: a hub file into its folder, the catalogue list, a licence to accept,
offline, and a download killed midway and resumed byte-identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.downloads.helpers import Server

REPO = Path(__file__).resolve().parents[2]
GUARD = Path(__file__).resolve().parent / "guard"


def _env(home: Path, server: Server | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "SDSTUDIO_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env.update(SDSTUDIO_HOME=str(home), PYTHONUNBUFFERED="1", QT_QPA_PLATFORM="offscreen")
    # the subprocess may reach 127.0.0.1 only (guard/sitecustomize.py)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(GUARD), env.get("PYTHONPATH", "")) if p)
    if server is not None:
        env["HF_ENDPOINT"] = server.base
    env.update(extra)
    return env


def _cli(args: list[str], env: dict[str, str], timeout: float = 120
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sdstudio", "download", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _vae_file(n_floats: int) -> bytes:
    import torch
    from safetensors.torch import save

    return save({"decoder.conv_in.weight": torch.arange(n_floats, dtype=torch.float32)})


def test_hub_file_into_its_folder(server: Server, home: Path) -> None:
    data = _vae_file(2000)
    server.hub["tester/vae"] = {"my-vae.safetensors": data}
    proc = _cli(["tester/vae", "my-vae.safetensors", "--quiet"], _env(home, server))
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path == home / "data" / "models" / "vae" / "my-vae.safetensors"  # kind guessed
    assert path.read_bytes() == data
    proc = _cli(["tester/vae", "my-vae.safetensors", "--quiet", "--sha256", "0" * 64],
                _env(home, server))
    assert proc.returncode == 1 and "sha256 mismatch" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_hostile_file_is_refused_by_the_cli(server: Server, home: Path) -> None:
    server.add("/not-a-model.safetensors", b"\x80\x02cposix\nsystem\nq\x00.")
    proc = _cli([server.url("/not-a-model.safetensors"), "--kind", "checkpoint", "--quiet"],
                _env(home))
    assert proc.returncode == 1, proc.stderr
    assert "refused" in proc.stderr and "deleted" in proc.stderr
    assert not (home / "data" / "models" / "checkpoints" / "not-a-model.safetensors").exists()


def test_list_licence_and_offline(home: Path) -> None:
    proc = _cli(["--list"], _env(home))
    assert proc.returncode == 0 and "sd15" in proc.stdout and "lcm-lora-sdxl" in proc.stdout
    proc = _cli(["sd15"], _env(home))
    assert proc.returncode == 2
    assert "CreativeML Open RAIL-M licence" in proc.stderr and "--accept-licence" in proc.stderr
    proc = _cli(["sd15", "--accept-licence"], _env(home, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 1 and "offline" in proc.stderr, proc.stderr
    proc = _cli(["no-such-entry"], _env(home))
    assert proc.returncode == 2 and "--list" in proc.stderr


def test_killed_midway_then_resumed_byte_identical(server: Server, home: Path) -> None:
    data = _vae_file(1_000_000)  # 4 MB
    server.add("/big-vae.safetensors", data, etag='"big-1"')
    server.throttle = lambda _sent: time.sleep(0.002)  # ~2 s for the whole file
    url = server.url("/big-vae.safetensors")
    part = home / "data" / "models" / "vae" / ".downloads" / "big-vae.safetensors.part"
    proc = subprocess.Popen([sys.executable, "-m", "sdstudio", "download", url, "--quiet"],
                            cwd=REPO, env=_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (part.is_file() and part.stat().st_size >= 1024 * 1024):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # as a crash would
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    server.throttle = None
    server.requests.clear()
    done = _cli([url, "--quiet"], _env(home))
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).read_bytes() == data
    assert [h.get("Range") for _, _, h in server.requests] == [f"bytes={kept}-"]
    assert not part.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child on POSIX")
def test_ctrl_c_keeps_a_resumable_partial(server: Server, home: Path) -> None:
    data = _vae_file(1_000_000)
    server.add("/vae2.safetensors", data, etag='"v2"')
    server.throttle = lambda _sent: time.sleep(0.002)
    part = home / "data" / "models" / "vae" / ".downloads" / "vae2.safetensors.part"
    proc = subprocess.Popen([sys.executable, "-m", "sdstudio", "download",
                             server.url("/vae2.safetensors"), "--quiet"], cwd=REPO,
                            env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while not (part.is_file() and part.stat().st_size > 0):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert part.is_file() and part.stat().st_size > 0


def test_the_subprocess_guard_refuses_other_addresses(home: Path) -> None:
    code = ("import socket\n"
            "try:\n    socket.create_connection(('10.255.255.1', 80), timeout=1)\n"
            "except OSError as exc:\n    print('refused' if 'test guard' in str(exc) else exc)\n"
            "try:\n    socket.getaddrinfo('huggingface.co', 443)\n"
            "except OSError as exc:\n    print('refused' if 'test guard' in str(exc) else exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(home), capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.split() == ["refused", "refused"], proc.stdout + proc.stderr
