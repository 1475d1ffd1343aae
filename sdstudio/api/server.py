"""The AUTOMATIC1111-compatible HTTP API: a Starlette app served by uvicorn in one thread.

Torch-free: every generation goes through :class:`sdstudio.api.service.ApiService` to SD
Studio's job queue; this thread only parses, checks, waits and encodes. Safe by default: on
127.0.0.1 unless told otherwise, and then only with a token (``Authorization: Bearer T``, or
HTTP Basic with T as the password, as A1111 clients send ``--api-auth``); bodies larger than
:data:`~sdstudio.api.mapping.MAX_BODY_BYTES` get 413; CORS only for listed origins.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import ipaddress
import logging
import socket
import tempfile
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sdstudio.api import mapping
from sdstudio.api.mapping import ApiError, ParsedCall, Result, refuse
from sdstudio.api.service import DEMO_TITLE, ApiCall, ApiService
from sdstudio.core import paths
from sdstudio.core.errors import ImageInputError, ModelError, RequestError, SDStudioError
from sdstudio.core.request import is_plain_name
from sdstudio.core.sampler_names import SAMPLER_NAMES, SCHEDULE_TYPES

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DISCONNECT_POLL_S = 0.2


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str) -> None:
    """Serving beyond this computer needs a token (one line, RequestError)."""
    if not is_loopback(host) and not token:
        raise RequestError("host", f"serving on {host} lets other computers in: set a token "
                           "(--token, or the token field in the settings)")


def error_response(status: int, detail: str, kind: str = "HTTPException") -> JSONResponse:
    """A1111's error shape (``api_middleware.handle_exception``)."""
    return JSONResponse({"error": kind, "detail": detail, "body": "", "errors": detail},
                        status_code=status)


# ------------------------------------------------------------------------- middleware
class Guard:
    """Token check (401) and request size limit (413) before any route runs."""

    def __init__(self, app: ASGIApp, token: str, max_body: int) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if self.token and scope.get("method") != "OPTIONS" and not self._authorized(
                headers.get("authorization", "")):
            response = error_response(401, "Not authenticated: send Authorization: Bearer "
                                      "<token>")
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await error_response(413, f"request body too large (at most "
                                 f"{self.max_body // (1024 * 1024)} MB)")(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await error_response(413, "request body too large")(scope, receive, send)

    def _authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        given = ""
        if scheme.lower() == "bearer":
            given = value.strip()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip()).decode("utf-8").partition(":")[2]
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return False
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())


class _TooLarge(Exception):
    pass


# ------------------------------------------------------------------------------ routes
class Api:
    """The route handlers, bound to one :class:`ApiService`."""

    def __init__(self, service: ApiService) -> None:
        self.service = service

    # ---------------------------------------------------------------- helpers
    async def _json(self, request: Request) -> Any:
        raw = await request.body()
        try:
            from sdstudio.core import safejson

            return safejson.loads(raw, max_bytes=mapping.MAX_BODY_BYTES, max_depth=32)
        except (ValueError, UnicodeDecodeError) as exc:
            raise refuse(f"the request body is not valid JSON ({exc})") from None

    def known(self, kind: str, name: str) -> bool:
        settings = self.service.settings.engine
        if kind == "model":
            return self.model_name(name) is not None
        if kind == "vae":
            return any(n == name for n, _p in paths.named_files(paths.search_dirs("vae", settings)))
        if kind == "lora":
            from sdstudio.core.addons import list_addons

            dirs = paths.search_dirs("lora", settings)
            return any(a.name == name for a in list_addons("lora", dirs))
        return False

    def model_name(self, name: str) -> str | None:
        """An A1111 checkpoint title or name as the name of a model in SD Studio's folders
        ("" for the demo model); None when there is none."""
        wanted = name.strip()
        if wanted in ("", DEMO_TITLE):
            return ""
        if wanted.endswith("]") and " [" in wanted:
            wanted = wanted[: wanted.rindex(" [")]
        if not is_plain_name(wanted):
            return None
        for m in self.service.models():
            path = Path(str(m.get("path", "")))
            if wanted in (m.get("name"), path.name, path.stem):
                return str(m.get("name"))
        return None

    def _styles(self) -> list[Any]:
        from sdstudio.core.styles import parse_styles, styles_path

        try:
            return parse_styles(styles_path().read_text(encoding="utf-8-sig"))
        except (OSError, SDStudioError):
            return []

    # ---------------------------------------------------------------- generation
    async def txt2img(self, request: Request) -> Response:
        return await self._generate(request, "txt2img")

    async def img2img(self, request: Request) -> Response:
        return await self._generate(request, "img2img")

    async def _generate(self, request: Request, kind: str) -> Response:
        body = await self._json(request)
        options = self.service.options
        call: ParsedCall = await anyio.to_thread.run_sync(
            lambda: mapping.parse_call(body, kind, options, self.known, self._styles))
        if call.request.model:
            call.request = call.request.replace(model=self.model_name(call.request.model))
            call.run_requests = [r.replace(model=call.request.model) for r in call.run_requests]
        api_call: ApiCall = await asyncio.wrap_future(self.service.submit(call))
        try:
            while not api_call.finished.is_set():
                await asyncio.sleep(DISCONNECT_POLL_S)
                if await request.is_disconnected():
                    log.info("API client went away: its job is cancelled")
                    self.service.cancel(api_call)
                    await anyio.to_thread.run_sync(api_call.finished.wait, 30.0)
                    return Response(status_code=499)
        except asyncio.CancelledError:
            self.service.cancel(api_call)
            raise
        failure = api_call.failure
        if failure is not None:
            status = 422 if failure.kind in (RequestError.__name__, ImageInputError.__name__) \
                else 404 if failure.kind == ModelError.__name__ else 500
            return error_response(status, failure.message, failure.kind)
        results = await anyio.to_thread.run_sync(lambda: _encode(api_call))
        loaded = self.service.loaded()
        info = mapping.info_json(call, results, options, loaded.name if loaded else "", "")
        images = [mapping.b64(r.png) for r in results] if call.send_images else []
        return JSONResponse({"images": images, "parameters": call.parameters, "info": info})

    async def progress(self, request: Request) -> Response:
        skip = request.query_params.get("skip_current_image", "false").lower() == "true"
        data = await anyio.to_thread.run_sync(lambda: self.service.progress(not skip))
        return JSONResponse(data)

    async def interrupt(self, request: Request) -> Response:
        await asyncio.wrap_future(self.service.interrupt())
        return JSONResponse({})

    async def skip(self, request: Request) -> Response:
        await asyncio.wrap_future(self.service.skip())
        return JSONResponse(None)

    # ---------------------------------------------------------------- options
    async def get_options(self, request: Request) -> Response:
        return JSONResponse(self._options())

    def _options(self) -> dict[str, Any]:
        o = self.service.options
        model = o.sd_model_checkpoint
        if not model:
            loaded = self.service.loaded()
            model = self._title_of(loaded.name if loaded else "") if loaded else DEMO_TITLE
        return {"sd_model_checkpoint": model, "sd_vae": o.sd_vae,
                "CLIP_stop_at_last_layers": o.CLIP_stop_at_last_layers,
                "sd_checkpoint_hash": "", "samples_format": "png"}

    def _title_of(self, name: str) -> str:
        for m in self.service.models():
            if name in (m.get("name"), Path(str(m.get("path", ""))).name):
                return _title(m)
        return name or DEMO_TITLE

    async def set_options(self, request: Request) -> Response:
        body = await self._json(request)
        if not isinstance(body, dict):
            raise refuse("options must be a JSON object")
        o = self.service.options
        current = self._options()
        updates: dict[str, Any] = {}
        for key, value in body.items():
            if key not in current:
                raise refuse(f"SD Studio does not support the option {key!r}")
            if value == current[key] or key == "sd_checkpoint_hash":
                continue  # A1111 clients post every option back; only changes matter
            updates[key] = value
        if "sd_model_checkpoint" in updates:
            name = self.model_name(str(updates["sd_model_checkpoint"]))
            if name is None:
                raise refuse(f"model {updates['sd_model_checkpoint']!r} not found")
        if "sd_vae" in updates:
            vae = str(updates["sd_vae"])
            if vae not in ("Automatic", "None") and not (is_plain_name(vae)
                                                         and self.known("vae", vae)):
                raise refuse(f"sd_vae {vae!r} not found in SD Studio's VAE folders")
        if "CLIP_stop_at_last_layers" in updates:
            skip = updates["CLIP_stop_at_last_layers"]
            if type(skip) is not int or not 1 <= skip <= 12:
                raise refuse("CLIP_stop_at_last_layers must be a whole number from 1 to 12")
        for key in ("samples_format",):
            if key in updates and updates[key] != "png":
                raise refuse(f"{key}: SD Studio answers with PNG images only")
        if "sd_model_checkpoint" in updates:
            name = self.model_name(str(updates["sd_model_checkpoint"])) or ""
            o.sd_model_checkpoint = self._title_of(name) if name else ""
            await asyncio.wrap_future(self.service.load_model(name))
        if "sd_vae" in updates:
            o.sd_vae = str(updates["sd_vae"])
        if "CLIP_stop_at_last_layers" in updates:
            o.CLIP_stop_at_last_layers = int(updates["CLIP_stop_at_last_layers"])
        return JSONResponse(None)

    # ---------------------------------------------------------------- lists
    async def sd_models(self, request: Request) -> Response:
        items = [{"title": DEMO_TITLE, "model_name": "sdstudio-demo", "hash": None,
                  "sha256": None, "filename": "", "config": None}]
        for m in self.service.models():
            items.append({"title": _title(m), "model_name": Path(str(m["name"])).name,
                          "hash": m.get("short_hash"), "sha256": None,
                          "filename": str(m.get("path", "")), "config": None})
        return JSONResponse(items)

    async def refresh_checkpoints(self, request: Request) -> Response:
        await anyio.to_thread.run_sync(self.service.refresh_models)
        return JSONResponse(None)

    async def sd_vae(self, request: Request) -> Response:
        dirs = paths.search_dirs("vae", self.service.settings.engine)
        return JSONResponse([{"model_name": n, "filename": str(p)}
                             for n, p in paths.named_files(dirs)])

    async def samplers(self, request: Request) -> Response:
        return JSONResponse([{"name": n, "aliases": [], "options": {}} for n in SAMPLER_NAMES])

    async def schedulers(self, request: Request) -> Response:
        return JSONResponse([{"name": n.lower().replace(" ", "_"), "label": n, "aliases": None,
                              "default_rho": -1, "need_inner_model": False}
                             for n in SCHEDULE_TYPES])

    async def loras(self, request: Request) -> Response:
        from sdstudio.core.addons import list_addons

        dirs = paths.search_dirs("lora", self.service.settings.engine)
        return JSONResponse([{"name": a.name, "alias": a.name, "path": str(a.path),
                              "metadata": {}} for a in list_addons("lora", dirs)])

    async def embeddings(self, request: Request) -> Response:
        from sdstudio.core.addons import list_addons

        dirs = paths.search_dirs("embedding", self.service.settings.engine)
        loaded = {a.name.rsplit(".", 1)[0]: {"step": None, "sd_checkpoint": None,
                                             "sd_checkpoint_name": None, "shape": 0,
                                             "vectors": 0}
                  for a in list_addons("embedding", dirs)}
        return JSONResponse({"loaded": loaded, "skipped": {}})

    async def upscalers(self, request: Request) -> Response:
        from sdstudio.core.upscalers import BUILTIN_UPSCALERS

        engine = self.service.settings.engine
        dirs = (str(paths.upscaler_dir()), *engine.upscaler_dirs)
        items = [{"name": n, "model_name": None, "model_path": None, "model_url": None,
                  "scale": None} for n in BUILTIN_UPSCALERS]
        items += [{"name": n, "model_name": n, "model_path": str(p), "model_url": None,
                   "scale": None}
                  for n, p in paths.named_files(dirs, (".pth", ".pt", ".safetensors"))]
        return JSONResponse(items)

    async def latent_upscale_modes(self, request: Request) -> Response:
        from sdstudio.core.upscalers import LATENT_UPSCALE_MODES

        return JSONResponse([{"name": n} for n in LATENT_UPSCALE_MODES])

    async def png_info(self, request: Request) -> Response:
        body = await self._json(request)
        image = body.get("image") if isinstance(body, dict) else None
        if not isinstance(image, str) or not image.strip():
            raise ApiError(404, "Image not found")
        return JSONResponse(await anyio.to_thread.run_sync(lambda: _png_info(image.strip())))


def _title(m: dict[str, Any]) -> str:
    name = str(m.get("name", ""))
    path = Path(str(m.get("path", "")))
    shown = path.name if path.suffix else name
    return f"{shown} [{m['short_hash']}]" if m.get("short_hash") else shown


def _encode(api_call: ApiCall) -> list[Result]:
    from sdstudio.core.metadata import to_infotext
    from sdstudio.storage.png import encode_png

    return [Result(im.request, im.info, encode_png(im.image, im.request, im.info),
                   to_infotext(im.request, im.info)) for im in api_call.images]


def _png_info(text: str) -> dict[str, Any]:
    from sdstudio.core.metadata import parse_infotext
    from sdstudio.storage.png import read_image_metadata, read_png_text

    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        raw = base64.b64decode(text)
    except (binascii.Error, ValueError):
        raise refuse("image is not valid base64") from None
    if len(raw) > mapping.MAX_IMAGE_BYTES:
        raise ApiError(413, "image is too large")
    folder = paths.inputs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".api-", suffix=".img") as tmp:
        tmp.write(raw)
        tmp.flush()
        items: dict[str, str] = {}
        with contextlib.suppress(SDStudioError, OSError), open(tmp.name, "rb") as fh:
            items = read_png_text(fh)
        try:
            infotext = read_image_metadata(tmp.name).infotext
        except SDStudioError:
            infotext = ""
    items.pop("parameters", None)
    items.pop("sdstudio", None)
    parameters: dict[str, Any] = {}
    if infotext:
        parsed = parse_infotext(infotext)
        parameters = {"Prompt": parsed.request.prompt,
                      "Negative prompt": parsed.request.negative_prompt, **parsed.params}
        size = str(parameters.get("Size", ""))
        if "x" in size:
            parameters["Size-1"], parameters["Size-2"] = size.split("x", 1)
    return {"info": infotext, "items": items, "parameters": parameters}


# ------------------------------------------------------------------------------ the app
def build_app(service: ApiService, token: str = "", cors_origins: tuple[str, ...] = (),
              max_body: int = mapping.MAX_BODY_BYTES) -> Starlette:
    api = Api(service)
    routes = [
        Route("/sdapi/v1/txt2img", api.txt2img, methods=["POST"]),
        Route("/sdapi/v1/img2img", api.img2img, methods=["POST"]),
        Route("/sdapi/v1/progress", api.progress, methods=["GET"]),
        Route("/sdapi/v1/interrupt", api.interrupt, methods=["POST"]),
        Route("/sdapi/v1/skip", api.skip, methods=["POST"]),
        Route("/sdapi/v1/options", api.get_options, methods=["GET"]),
        Route("/sdapi/v1/options", api.set_options, methods=["POST"]),
        Route("/sdapi/v1/sd-models", api.sd_models, methods=["GET"]),
        Route("/sdapi/v1/sd-vae", api.sd_vae, methods=["GET"]),
        Route("/sdapi/v1/samplers", api.samplers, methods=["GET"]),
        Route("/sdapi/v1/schedulers", api.schedulers, methods=["GET"]),
        Route("/sdapi/v1/loras", api.loras, methods=["GET"]),
        Route("/sdapi/v1/embeddings", api.embeddings, methods=["GET"]),
        Route("/sdapi/v1/upscalers", api.upscalers, methods=["GET"]),
        Route("/sdapi/v1/latent-upscale-modes", api.latent_upscale_modes, methods=["GET"]),
        Route("/sdapi/v1/png-info", api.png_info, methods=["POST"]),
        Route("/sdapi/v1/refresh-checkpoints", api.refresh_checkpoints, methods=["POST"]),
    ]

    async def api_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ApiError):
            return error_response(exc.status, exc.detail)
        return error_response(500, "internal error (see SD Studio's log)", type(exc).__name__)

    middleware = [Middleware(Guard, token=token, max_body=max_body)]
    if cors_origins:
        middleware.insert(0, Middleware(CORSMiddleware,
                                        allow_origins=list(cors_origins),
                                        allow_methods=["GET", "POST"],
                                        allow_headers=["Authorization", "Content-Type"]))
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={ApiError: api_error, Exception: api_error})
    return app


class ApiServer:
    """uvicorn serving :func:`build_app` in one thread. ``start()`` binds (errors at once:
    port in use, no token for another address); ``stop()`` ends it and waits."""

    def __init__(self, service: ApiService, host: str = "127.0.0.1", port: int = 7860,
                 token: str = "", cors_origins: tuple[str, ...] = (),
                 max_body: int = mapping.MAX_BODY_BYTES) -> None:
        check_bind(host, token)
        self.max_body = max_body
        self.service = service
        self.host = host
        self.requested_port = port
        self.token = token
        self.cors_origins = cors_origins
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError as exc:
            sock.close()
            raise RequestError("port", f"cannot serve on {self.host}:{self.requested_port}: "
                               f"{exc.strerror or exc}") from None
        sock.listen(64)
        self.port = sock.getsockname()[1]
        app = build_app(self.service, self.token, self.cors_origins, self.max_body)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                ws="none", timeout_keep_alive=5, timeout_graceful_shutdown=3)
        server = uvicorn.Server(config)
        self._server = server

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException:
                log.exception("the API server stopped with an error")
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name="sdstudio-api", daemon=True)
        self._thread.start()
        log.info("API serving on %s", self.url)

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(2.0)
        self._thread = None
        self._server = None
