"""The API against the real server on 127.0.0.1, the real job queue and the real engine on
the tiny model, with the JSON real clients send (tests/api/data/clients.json)."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.api.conftest import b64_png, decode_png, pump_until

DATA = json.loads((Path(__file__).parent / "data" / "clients.json").read_text())


def _check_images(reply: Any, body: dict[str, Any], count: int) -> list[Any]:
    """Every image decodes, carries the infotext that ``info`` lists, and that infotext
    says what the request asked for."""
    from sdstudio.core.metadata import parse_infotext
    from sdstudio.core.request import GenerationRequest

    assert reply.status == 200, reply.data
    assert set(reply.data) == {"images", "parameters", "info"}
    info = json.loads(reply.data["info"])
    assert len(reply.data["images"]) == count == len(info["infotexts"]) == len(info["all_seeds"])
    parsed_all = []
    for i, text in enumerate(reply.data["images"]):
        image = decode_png(text)
        assert image.size == (body["width"], body["height"])
        assert image.info["parameters"] == info["infotexts"][i]
        parsed = parse_infotext(info["infotexts"][i]).request
        assert parsed.prompt == body["prompt"]
        assert parsed.negative_prompt == body.get("negative_prompt", "")
        assert parsed.steps == body["steps"]
        assert parsed.cfg_scale == float(body.get("cfg_scale", 7))
        assert (parsed.width, parsed.height) == (body["width"], body["height"])
        assert parsed.seed == info["all_seeds"][i]
        expected = GenerationRequest.from_dict({
            "prompt": "", "sampler": body.get("sampler_name") or "Euler",
            "schedule_type": body.get("scheduler") or "Automatic"})
        assert (parsed.sampler, parsed.schedule_type) == (expected.sampler,
                                                          expected.schedule_type)
        parsed_all.append(parsed)
    for key in body:  # the parameters echo the request, as A1111's do
        if key not in ("init_images", "mask"):
            assert reply.data["parameters"][key] == body[key]
    return parsed_all


@pytest.mark.parametrize("client", ["openwebui_txt2img", "sillytavern_txt2img",
                                    "webuiapi_txt2img"])
def test_clients_txt2img(serve: Any, client: str) -> None:
    s = serve()
    case = DATA[client]
    body = case["body"]
    reply = s.client.post(case["path"], body)
    count = body.get("batch_size", 1) * body.get("n_iter", 1)
    parsed = _check_images(reply, body, count)
    info = json.loads(reply.data["info"])
    if "seed" in body and body["seed"] >= 0:
        assert info["all_seeds"] == [body["seed"] + i for i in range(count)]
    else:  # a random first seed, then seed + 1 ... as A1111
        assert info["all_seeds"] == [info["seed"] + i for i in range(count)]
    saved = sorted(s.out_dir.rglob("*.png")) if s.out_dir.exists() else []
    assert len(saved) == (count if body.get("save_images") else 0)
    # the queue ran one job per run, marked as API jobs
    jobs = s.queue.jobs()
    assert len(jobs) == body.get("n_iter", 1)
    assert all(j.source == "api" and j.title.startswith("API: ") for j in jobs)
    assert parsed[0].rng == "cpu"


def test_webuiapi_img2img_and_inpaint(serve: Any) -> None:
    from sdstudio.core.metadata import parse_infotext

    s = serve()
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    body = dict(DATA["webuiapi_img2img"]["body"])
    body["init_images"] = ["data:image/png;base64," + b64_png(init)]
    body["mask"] = "data:image/png;base64," + b64_png(mask)
    reply = s.client.post("/sdapi/v1/img2img", body)
    _check_images(reply, body, 1)
    params = parse_infotext(json.loads(reply.data["info"])["infotexts"][0])
    assert params.request.strength == 0.75
    assert params.params["Mask blur"] == "4"
    assert params.request.inpaint_only_masked  # A1111's inpaint_full_res default
    assert reply.data["parameters"]["init_images"] is None  # include_init_images false
    job = s.queue.jobs()[0]
    assert job.request.mode.value == "inpaint"
    assert Path(job.request.init_image).parent.name == "inputs"  # saved in SD Studio's data
    # without the mask: image to image
    body.pop("mask")
    reply = s.client.post("/sdapi/v1/img2img", body)
    _check_images(reply, body, 1)
    assert s.queue.jobs()[-1].request.mode.value == "img2img"


@pytest.mark.parametrize("engine", ["tiny model", "fake"])
def test_progress_interrupt_and_skip(serve: Any, engine: str) -> None:
    from sdstudio.testing.fake_engine import FakeScript

    s = serve(fake=FakeScript(step_delay=0.05) if engine == "fake" else None)
    assert s.client.get("/sdapi/v1/progress").data["state"]["job_count"] == 0
    pending = s.client.start("POST", "/sdapi/v1/txt2img",
                             {"prompt": "slow", "steps": 300, "width": 128, "height": 128,
                              "n_iter": 3, "sampler_name": "Euler"})
    pump_until(lambda: s.queue.running_job is not None)
    deadline = time.monotonic() + 60
    while True:
        seen = s.client.get("/sdapi/v1/progress").data
        if seen["state"]["sampling_step"] >= 3 and seen["current_image"]:
            break
        assert time.monotonic() < deadline, seen
    assert 0 < seen["progress"] < 1 and seen["eta_relative"] > 0
    assert seen["state"]["job_count"] == 3 and seen["state"]["sampling_steps"] == 300
    decode_png(seen["current_image"])
    # skip: the first run ends, the second starts
    assert s.client.post("/sdapi/v1/skip").status == 200
    pump_until(lambda: s.queue.jobs()[0].state.value == "cancelled")
    pump_until(lambda: s.queue.jobs()[1].state.value == "running")
    # interrupt: the whole call ends, answering with what it made (nothing)
    assert s.client.post("/sdapi/v1/interrupt").status == 200
    reply = pending.result()
    assert reply.status == 200 and reply.data["images"] == []
    assert [j.state.value for j in s.queue.jobs()] == ["cancelled"] * 3


def test_token_size_and_bad_fields(serve: Any) -> None:
    s = serve(token="s3cret")
    ok = {"prompt": "x", "width": 64, "height": 64, "steps": 2}
    s.client.token = ""
    assert s.client.post("/sdapi/v1/txt2img", ok).status == 401
    assert s.client.get("/sdapi/v1/options").status == 401
    s.client.token = "wrong"
    assert s.client.get("/sdapi/v1/options").status == 401
    s.client.token = ""
    import base64
    basic = base64.b64encode(b"user:s3cret").decode()
    assert s.client.get("/sdapi/v1/options", headers={"Authorization": f"Basic {basic}"}
                        ).status == 200
    s.client.token = "s3cret"
    small = serve(token="s3cret", max_body=100_000)
    big = b'{"prompt": "' + b"a" * 200_000 + b'"}'
    assert small.client.post("/sdapi/v1/txt2img", raw=big).status == 413
    # without a Content-Length (chunked), counted as it arrives
    conn = http.client.HTTPConnection("127.0.0.1", small.server.port, timeout=30)
    conn.putrequest("POST", "/sdapi/v1/txt2img")
    conn.putheader("Authorization", "Bearer s3cret")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for _ in range(4):
        chunk = b"a" * 50_000
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.send(b"0\r\n\r\n")
    assert conn.getresponse().status == 413
    conn.close()
    from sdstudio.api.mapping import MAX_BODY_BYTES
    huge = s.client.post("/sdapi/v1/txt2img", headers={"Content-Length": str(MAX_BODY_BYTES + 1)},
                         raw=b"{}")
    assert huge.status == 413
    for bad, words in [({"steps": "many"}, "steps"), ({"width": 65}, "multiple of 8"),
                       ({"sampler_name": "Nope"}, "unknown sampler"),
                       ({"restore_faces": True}, "restore_faces"),
                       ({"alwayson_scripts": {"ADetailer": {"args": [True, {}]}}}, "ADetailer"),
                       ({"init_image": "/etc/passwd"}, "base64"),
                       ({"override_settings": {"sd_model_checkpoint": "../../x"}}, "not a path"),
                       ({"prompt": "a <lora:../../secret:1>"}, "not a path")]:
        reply = s.client.post("/sdapi/v1/txt2img", {**ok, **bad})
        assert reply.status == 422, (bad, reply.data)
        assert words in reply.data["detail"], reply.data
        assert reply.data["error"] and "\n" not in reply.data["detail"]
    reply = s.client.post("/sdapi/v1/img2img", {**ok, "init_images": ["bm90IGFuIGltYWdl"]})
    assert reply.status == 422 and "not an image" in reply.data["detail"]
    assert not s.queue.jobs()  # nothing bad was queued


def test_client_that_disconnects_cancels_its_job(serve: Any) -> None:
    from sdstudio.testing.fake_engine import FakeScript

    s = serve(fake=FakeScript(step_delay=0.05))
    body = json.dumps({"prompt": "gone", "steps": 200, "width": 64, "height": 64}).encode()
    sock = socket.create_connection(("127.0.0.1", s.server.port))
    sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nContent-Length: " + str(len(body)).encode()
                 + b"\r\n\r\n" + body)
    pump_until(lambda: s.queue.running_job is not None)
    sock.close()
    pump_until(lambda: s.queue.jobs()[0].state.value == "cancelled", 30)


def test_options_lists_and_png_info(serve: Any, tiny_model: Path) -> None:
    s = serve(model_dirs=(str(tiny_model.parent),))
    options = s.client.get("/sdapi/v1/options").data
    assert {"sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"} <= set(options)
    options["CLIP_stop_at_last_layers"] = 2  # Open WebUI posts every option back
    assert s.client.post("/sdapi/v1/options", options).status == 200
    assert s.client.get("/sdapi/v1/options").data["CLIP_stop_at_last_layers"] == 2
    assert s.client.post("/sdapi/v1/options", {"sd_model_checkpoint": "../x"}).status == 422
    assert s.client.post("/sdapi/v1/options", {"samples_save": False}).status == 422
    assert s.client.post("/sdapi/v1/refresh-checkpoints").status == 200
    models = s.client.get("/sdapi/v1/sd-models").data
    titles = [m["title"] for m in models]
    assert any(t.startswith(tiny_model.name) for t in titles), titles
    chosen = next(t for t in titles if t.startswith(tiny_model.name))
    assert s.client.post("/sdapi/v1/options", {"sd_model_checkpoint": chosen}).status == 200
    reply = s.client.post("/sdapi/v1/txt2img", {"prompt": "skip", "width": 64, "height": 64,
                                                "steps": 2, "seed": 5})
    assert reply.status == 200, reply.data
    infotext = json.loads(reply.data["info"])["infotexts"][0]
    assert "Clip skip: 2" in infotext
    assert s.queue.jobs()[-1].request.model == tiny_model.name
    samplers = [x["name"] for x in s.client.get("/sdapi/v1/samplers").data]
    assert "Euler a" in samplers and "DPM++ 2M" in samplers
    schedulers = s.client.get("/sdapi/v1/schedulers").data
    assert {"name": "karras", "label": "Karras"}.items() <= schedulers[[x["label"] for x in
                                                         schedulers].index("Karras")].items()
    for path in ("/sdapi/v1/sd-vae", "/sdapi/v1/loras", "/sdapi/v1/latent-upscale-modes"):
        assert isinstance(s.client.get(path).data, list)
    upscalers = [u["name"] for u in s.client.get("/sdapi/v1/upscalers").data]
    assert upscalers[:3] == ["None", "Lanczos", "Nearest"]
    assert set(s.client.get("/sdapi/v1/embeddings").data) == {"loaded", "skipped"}
    info = s.client.post("/sdapi/v1/png-info", {"image": reply.data["images"][0]}).data
    assert info["info"] == infotext
    assert info["parameters"]["Prompt"] == "skip" and info["parameters"]["Seed"] == "5"


def test_server_stops_cleanly(serve: Any) -> None:
    s = serve()
    port = s.server.port
    assert s.client.get("/sdapi/v1/samplers").status == 200
    s.server.stop()
    assert not s.server.running
    with pytest.raises(OSError):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/sdapi/v1/samplers")
        conn.getresponse()


def test_cors_only_for_listed_origins(serve: Any) -> None:
    closed = serve()
    reply = closed.client._request("OPTIONS", "/sdapi/v1/txt2img", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in reply.raw.decode(errors="replace").lower()
    listed = serve(cors=("http://localhost:3000",))
    conn = http.client.HTTPConnection("127.0.0.1", listed.server.port, timeout=10)
    for origin, allowed in (("http://localhost:3000", True), ("http://evil.example", False)):
        conn.request("OPTIONS", "/sdapi/v1/txt2img", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        resp = conn.getresponse()
        resp.read()
        assert (resp.getheader("access-control-allow-origin") == origin) is allowed
    conn.close()


def test_hires_fix_fields_flow_in(serve: Any) -> None:
    """A1111's hires-fix keys reach the request through the field table's aliases."""
    from sdstudio.core.metadata import parse_infotext
    from sdstudio.core.request import FIELD_NAMES

    if "hires" not in FIELD_NAMES:
        pytest.skip("SD Studio has no hires fix field yet")
    s = serve()
    body = {"prompt": "hires", "width": 64, "height": 64, "steps": 2, "seed": 3,
            "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent",
            "hr_second_pass_steps": 2, "denoising_strength": 0.5}
    reply = s.client.post("/sdapi/v1/txt2img", body)
    assert reply.status == 200, reply.data
    image = decode_png(reply.data["images"][0])
    assert image.size == (128, 128)
    params = parse_infotext(image.info["parameters"]).params
    assert params["Hires upscale"] == "2" and params["Denoising strength"] == "0.5"
