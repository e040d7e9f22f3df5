"""The studio's ASGI app (Starlette): the page, and the JSON API under ``/api``.

Every request passes ``Guard`` first: the Host header must name this machine
(DNS rebinding), and the request must carry the per-run token — as
``?token=``, the ``X-Cakfx-Token`` header, or (for reads only) the cookie the
page gets when it is opened with ``?token=``. Anything else is a 403.

Example, without a browser::

    from starlette.testclient import TestClient
    from cakfx.studio.app import Studio, create_app

    studio = Studio(files=["loop.wav"])
    client = TestClient(create_app(studio), headers={"X-Cakfx-Token": studio.token})
    f = client.get("/api/files").json()[0]
    job = client.post("/api/process", json={"file": f["id"], "preset": "texture-drums"}).json()
"""

from __future__ import annotations

import hmac
import json
from contextlib import asynccontextmanager
from importlib import resources
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from cakfx import __version__
from cakfx.errors import CakfxError
from cakfx.studio.core import Conflict, NotFound, Studio, TooLarge

COOKIE = "cakfx_studio_token"
HEADER = "x-cakfx-token"
STATIC = {  # the only files served from the package: name -> content type
    "studio.js": "text/javascript; charset=utf-8",
    "studio.css": "text/css; charset=utf-8",
}
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
FORBIDDEN = "403 Forbidden: missing or wrong studio token; open the URL that 'cakfx studio' printed\n"

__all__ = ["Studio", "create_app"]


class Guard:
    """Pure ASGI middleware: Host check, then token check, for every HTTP request."""

    def __init__(self, app, token: str, hosts: set[str]) -> None:
        self.app, self.token, self.hosts = app, token, {h.lower() for h in hosts}

    def _ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = _hostname(headers.get("host", ""))
        if host not in self.hosts:
            response = PlainTextResponse(f"403 Forbidden: unexpected Host {host!r}\n", status_code=403)
            return await response(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        by_query = self._ok((query.get("token") or [None])[0])
        by_header = self._ok(headers.get(HEADER))
        cookie = _cookie(headers.get("cookie", ""), COOKIE)
        by_cookie = self._ok(cookie) and scope["method"] in ("GET", "HEAD")
        if not (by_query or by_header or by_cookie):
            return await PlainTextResponse(FORBIDDEN, status_code=403)(scope, receive, send)
        if by_query and scope["path"] == "/":
            # trade the token in the URL for a cookie, and take it out of the address bar
            response = Response(status_code=303, headers={"location": "/"})
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def _hostname(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _error(exc: Exception) -> JSONResponse:
    status = 400
    if isinstance(exc, NotFound):
        status = 404
    elif isinstance(exc, Conflict):
        status = 409
    elif isinstance(exc, TooLarge):
        status = 413
    return JSONResponse({"error": str(exc)}, status_code=status)


def _api(fn):
    """A JSON endpoint run in the thread pool; ``CakfxError`` becomes ``{"error": ...}``."""

    async def endpoint(request: Request):
        body = None
        if request.method == "POST":
            raw = await request.body()
            try:
                body = json.loads(raw or b"{}")
            except (json.JSONDecodeError, UnicodeDecodeError):
                return JSONResponse({"error": "the request body is not JSON"}, status_code=400)
            if not isinstance(body, dict):
                return JSONResponse({"error": "the request body must be a JSON object"}, status_code=400)
        try:
            result = await run_in_threadpool(fn, request, body)
        except CakfxError as exc:
            return _error(exc)
        return result if isinstance(result, Response) else JSONResponse(result)

    endpoint.__name__ = fn.__name__
    return endpoint


def create_app(studio: Studio, hosts: set[str] | None = None) -> Starlette:
    """The studio's Starlette app around ``studio``.

    ``hosts`` are the Host names accepted (default: loopback names plus
    ``testserver``, Starlette's test client). The app closes ``studio`` on shutdown.
    """
    hosts = set(hosts) if hosts else LOOPBACK_NAMES | {"testserver"}

    def page(request: Request):
        html = _static("index.html").replace("{{TOKEN}}", studio.token).replace("{{VERSION}}", __version__)
        return HTMLResponse(html, headers={"cache-control": "no-store", "referrer-policy": "no-referrer"})

    def static(request: Request):
        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found\n", status_code=404)
        return Response(_static(name), media_type=STATIC[name], headers={"cache-control": "no-store"})

    @_api
    def info(request, body):
        return {
            "version": __version__,
            "max_upload": studio.max_upload,
            "files": studio.list_files(),
            "batch": studio.batch,
        }

    @_api
    def effects(request, body):
        from cakfx.registry import effects as registry
        from cakfx.weights import list_weights

        return {
            "effects": [spec.to_dict() for spec in registry().values()],
            "weights": sorted(list_weights()),
        }

    @_api
    def presets(request, body):
        from cakfx.presets import preset_rows

        # the page gets no paths: presets are chosen by name
        return [{k: row[k] for k in ("name", "source", "description")} for row in preset_rows()]

    @_api
    def preset(request, body):
        return studio.preset_chain(request.path_params["name"])

    @_api
    def save_preset(request, body):
        path = studio.save_preset(
            body.get("name"),
            body.get("chain"),
            description=body.get("description", ""),
            base=body.get("preset") or None,
            overwrite=bool(body.get("overwrite")),
        )
        return {"name": path.stem, "path": str(path)}

    async def upload(request: Request):
        name = request.query_params.get("name", "")
        length = request.headers.get("content-length")
        chunks = []
        try:
            studio.check_upload_size(int(length) if length and length.isdigit() else None)
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                studio.check_upload_size(size)
                chunks.append(chunk)
            item = await run_in_threadpool(studio.upload, name, chunks, size)
        except CakfxError as exc:
            return _error(exc)
        return JSONResponse(item.to_dict())

    @_api
    def files(request, body):
        return studio.list_files()

    @_api
    def file_info(request, body):
        return studio.file(request.path_params["id"]).to_dict()

    @_api
    def audio(request, body):
        return FileResponse(studio.playable(request.path_params["id"]), media_type="audio/wav")

    @_api
    def analysis(request, body):
        return studio.analysis(request.path_params["id"])

    @_api
    def download(request, body):
        path, name = studio.export(request.path_params["id"], request.query_params.get("format", "same"))
        return FileResponse(path, filename=name, content_disposition_type="attachment")

    @_api
    def process(request, body):
        chain = body.get("chain")
        base = body.get("preset") or None
        if chain is None and base:
            chain = studio.preset_chain(base)["chain"]
        return studio.submit(body.get("file"), chain, base=base).to_dict()

    @_api
    def job(request, body):
        return studio.job(request.path_params["id"]).to_dict()

    @_api
    def cancel(request, body):
        return studio.cancel(request.path_params["id"]).to_dict()

    @_api
    def batch(request, body):
        return studio.batch or {"report": None, "files": []}

    @asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            studio.close()

    routes = [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/info", info),
        Route("/api/effects", effects),
        Route("/api/presets", presets),
        Route("/api/presets", save_preset, methods=["POST"]),
        Route("/api/presets/{name}", preset),
        Route("/api/upload", upload, methods=["POST"]),
        Route("/api/files", files),
        Route("/api/files/{id}", file_info),
        Route("/api/files/{id}/audio", audio),
        Route("/api/files/{id}/analysis", analysis),
        Route("/api/files/{id}/download", download),
        Route("/api/process", process, methods=["POST"]),
        Route("/api/jobs/{id}", job),
        Route("/api/jobs/{id}/cancel", cancel, methods=["POST"]),
        Route("/api/batch", batch),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(Guard, token=studio.token, hosts=hosts)
    app.state.studio = studio
    return app


def _static(name: str) -> str:
    return (resources.files("cakfx.studio") / "static" / name).read_text(encoding="utf-8")
