"""``sdstudio serve`` as a person runs it: a process of its own, stopped with Ctrl+C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.cli.conftest import REPO, cli_env


def test_serve_answers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    env["SDSTUDIO_FAKE_ENGINE"] = "1"  # the same server over the scriptable engine: fast
    proc = subprocess.Popen([sys.executable, "-m", "sdstudio", "serve", "--port", "0",
                             "--token", "abc"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+)/sdapi/v1/", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = match.group(1)
        body = json.dumps({"prompt": "headless", "width": 64, "height": 64, "steps": 2,
                           "save_images": True}).encode()
        req = urllib.request.Request(url + "/sdapi/v1/txt2img", data=body, headers={
            "Content-Type": "application/json", "Authorization": "Bearer abc"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            data = json.loads(resp.read())
        assert len(data["images"]) == 1
        assert "headless" in json.loads(data["info"])["infotexts"][0]
        saved = list((tmp_path / "home").rglob("*.png"))
        assert any(p.parent.name != "inputs" for p in saved)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_elsewhere_needs_a_token(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    env["SDSTUDIO_FAKE_ENGINE"] = "1"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "sdstudio", "serve", "--host", "0.0.0.0",
                          "--port", "0"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "token" in lines[0], out.stderr
    assert time.monotonic() - started < 30
