"""The HTTP side of `clipforge serve`: a Starlette app over a `SearchService`, and running it with uvicorn.

Routes (all answers JSON except the page, its two static files and thumbnails):

    GET  /                  the web page (static/index.html; app.js and app.css under /static/)
    GET  /api/health        {"status": "ok", "items": N, "model": ..., ...}
    GET  /api/search        ?q=TEXT | ?id=ITEM | ?image_url=URL, and &k=N (default 10)
    POST /api/search        multipart: image (file) | image_url, and k
    POST /api/classify      multipart: image (file) | image_url, and labels (JSON list or comma-separated)
    GET  /api/thumb/{id}    JPEG thumbnail of item `id` of the index

Why Starlette and not FastAPI: every parameter here is checked by hand anyway (unknown ones are
refused, errors are `{"error", "code"}` rather than FastAPI's `{"detail": [...]}`), so FastAPI's
pydantic layer would only add a dependency, and its /docs page loads its scripts from a CDN.

The guard (`_Guard`, pure ASGI, outermost) applies to every request before any route runs:
the Host header must name this server when it listens on loopback (a web page cannot reach it by
DNS rebinding); with a token every /api request needs `Authorization: Bearer TOKEN` (compared in
constant time); a body over the upload limit is answered 413; a request running past the time
limit is answered 504 (its queued model work is cancelled); every answer carries a strict
Content-Security-Policy, nosniff and no-referrer.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
import socket
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, Callable, Optional, Sequence

from clipforge.serve.errors import MISSING_EXTRA_HINT, ApiError, ServeError
from clipforge.serve.service import SearchService, parse_labels
from clipforge.serve.urls import UrlPolicy, fetch_url
from clipforge.serve.worker import EncoderBusy

try:
    from starlette.applications import Starlette
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ServeError(f"{MISSING_EXTRA_HINT} ({e})") from None

__all__ = ["ServeOptions", "create_app", "run_server", "check_bind", "is_loopback_host", "LOOPBACK_NAMES"]

log = logging.getLogger("clipforge.serve")

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MIN_TOKEN_CHARS = 16
FORM_OVERHEAD = 64 * 1024  # bytes a request body may hold beyond the upload limit (labels, k, multipart framing)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
STATIC = {  # the only files the server reads besides the index's own images: fixed names, no client path
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}


@dataclass
class ServeOptions:
    """How the app treats requests. `allowed_hosts`: Host header names accepted (None: any; the
    default when listening on loopback is the loopback names). `url_policy`: what `image_url` may
    fetch when `allow_urls` (default: public http(s) only, the upload limit, 10 s)."""

    token: Optional[str] = None
    timeout: float = 30.0
    allow_urls: bool = False
    url_policy: Optional[UrlPolicy] = None
    allowed_hosts: Optional[Sequence[str]] = LOOPBACK_NAMES
    threads: int = 4  # decoding, searching, thumbnails, URL fetches
    drain_seconds: float = 5.0  # how long an over-limit upload is read (and dropped) so the client sees the 413
    extra_hosts: Sequence[str] = field(default_factory=tuple)


# ---- checks on how the server is started ---------------------------------------------------------


def is_loopback_host(host: str) -> bool:
    """True when `host` (an address or a name) means this machine only: every address it resolves to is loopback."""
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_bind(host: str, token: Optional[str]) -> None:
    """Refuse to listen beyond this machine without a token, and refuse weak tokens (`ServeError`)."""
    if token is not None:
        if len(token) < MIN_TOKEN_CHARS or any(ord(c) < 33 or ord(c) > 126 for c in token):
            raise ServeError(
                f"--token must be at least {MIN_TOKEN_CHARS} printable ASCII characters without spaces; make one with "
                "python -c \"import secrets; print(secrets.token_urlsafe(24))\""
            )
        return
    if not is_loopback_host(host):
        raise ServeError(
            f"refusing to listen on {host!r} without --token: that address is reachable from other machines, and "
            "anyone who reaches it could search the collection and see its images. Pass --token TOKEN (clients send "
            "'Authorization: Bearer TOKEN'), or keep the default --host 127.0.0.1"
        )


# ---- the guard -----------------------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def _security_headers(path: str) -> list[tuple[bytes, bytes]]:
    cache = b"private, max-age=3600" if path.startswith("/api/thumb/") else b"no-store"
    return [
        (b"content-security-policy", CSP.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-resource-policy", b"same-origin"),
        (b"cache-control", cache),
    ]


class _Guard:
    """Host check, bearer token, body limit, time limit and security headers (see the module docstring)."""

    def __init__(self, app: Any, *, options: ServeOptions, max_upload: int) -> None:
        self.app, self.options = app, options
        self.max_body = max_upload + FORM_OVERHEAD  # the image plus the form's other fields and boundaries
        self.limit_text = f"{max_upload} bytes for the image, --max-upload-mb"
        self.token = options.token.encode() if options.token else None
        hosts = options.allowed_hosts
        self.hosts = None if hosts is None else {h.lower().strip("[]") for h in (*hosts, *options.extra_hosts)}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        started = False

        async def send_with_headers(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *_security_headers(path)]}
            await send(message)

        async def answer(status: int, message: str, code: str, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
            body = _json_bytes({"error": message, "code": code})
            await send_with_headers({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
            await send_with_headers({"type": "http.response.body", "body": body})

        host = _host_name(headers.get("host", ""))
        if self.hosts is not None and host not in self.hosts:
            await answer(400, f"Host {headers.get('host', '')[:100]!r} is not a name of this server "
                              f"(it answers to {', '.join(sorted(self.hosts))})", "bad_host")
            return
        if self.token is not None and path.startswith("/api/"):
            given = headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode("latin-1"), self.token):
                why = "missing" if not given else "wrong"
                await answer(401, f"this server needs 'Authorization: Bearer TOKEN' on /api requests (the token is {why})",
                             "unauthorized", [(b"www-authenticate", b'Bearer realm="clipforge"')])
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._drain(receive)
            await answer(413, f"the request body is {int(length)} bytes, over the upload limit ({self.limit_text})",
                         "too_large")
            return

        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge
            return message

        try:
            await asyncio.wait_for(self.app(scope, limited_receive, send_with_headers), self.options.timeout)
        except _BodyTooLarge:
            if started:
                raise
            await answer(413, f"the request body is over the upload limit ({self.limit_text})", "too_large")
        except asyncio.TimeoutError:
            if started:
                raise
            log.warning("%s %s: over the %g s limit", scope.get("method"), path, self.options.timeout)
            await answer(504, f"the request took longer than the server's {self.options.timeout:g} s limit", "timeout")

    async def _drain(self, receive: Callable) -> None:
        """Read and drop an over-limit body for a few seconds, so that a client still sending it gets the 413
        instead of a reset connection (as nginx's lingering close does)."""
        async def drain() -> None:
            while True:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return

        try:
            await asyncio.wait_for(drain(), self.options.drain_seconds)
        except asyncio.TimeoutError:
            pass


def _host_name(value: str) -> str:
    """The host of a Host header, without the port: "[::1]:8765" -> "::1", "localhost:80" -> "localhost"."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


# ---- the routes ----------------------------------------------------------------------------------


def create_app(service: SearchService, options: Optional[ServeOptions] = None) -> Starlette:
    """The ASGI app serving `service` under `options` (default `ServeOptions()`; run it with uvicorn, or `run_server`)."""
    options = options or ServeOptions()
    pool = ThreadPoolExecutor(max_workers=max(1, options.threads), thread_name_prefix="clipforge-serve")
    limits = service.limits
    url_policy = options.url_policy or UrlPolicy(max_bytes=limits.max_upload_bytes, timeout=min(10.0, options.timeout))

    async def in_pool(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(pool.submit(fn, *args))

    async def model_result(submit: Callable[[], Future]) -> Any:
        try:
            future = submit()
        except EncoderBusy as e:
            raise ApiError(503, f"the server is busy ({e}); try again shortly", "busy") from None
        return await asyncio.wrap_future(future)  # cancelled with the request when it times out

    def check_params(request: Request, allowed: Sequence[str]) -> dict[str, str]:
        params: dict[str, str] = {}
        for key, value in request.query_params.multi_items():
            if key not in allowed:
                accepted = ", ".join(allowed) if allowed else "none"
                raise ApiError(400, f"unknown parameter {key!r} (accepted: {accepted})", "unknown_parameter")
            if key in params:
                raise ApiError(400, f"parameter {key!r} given more than once", "bad_parameter")
            params[key] = value
        return params

    def parse_k(value: Optional[str]) -> int:
        if value is None:
            return 10
        if not re.fullmatch(r"-?[0-9]{1,9}", value.strip()):
            raise ApiError(400, f"k must be an integer, got {value[:40]!r}", "bad_parameter")
        return service.check_k(int(value))

    async def read_form(request: Request, allowed: Sequence[str]) -> dict[str, Any]:
        """The fields of a multipart (or urlencoded) body; unknown or repeated fields are refused."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not kind and request.headers.get("content-length", "0") == "0":
            return {}  # no body at all: the checks below name what is missing
        if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
            raise ApiError(415, f"send multipart/form-data (fields: {', '.join(allowed)}), not {kind or 'a body without a type'}",
                           "unsupported_media_type")
        try:
            form = await request.form(max_files=2, max_fields=len(allowed) + 2, max_part_size=1024 * 1024)
        except HTTPException as e:  # malformed multipart, too many parts
            raise ApiError(400, f"malformed form data: {e.detail}", "bad_form") from None
        fields: dict[str, Any] = {}
        try:
            for key, value in form.multi_items():
                if key not in allowed:
                    raise ApiError(400, f"unknown field {key!r} (accepted: {', '.join(allowed)})", "unknown_parameter")
                if key in fields:
                    raise ApiError(400, f"field {key!r} given more than once", "bad_parameter")
                if isinstance(value, UploadFile):
                    if key != "image":
                        raise ApiError(400, f"field {key!r} must be text, not a file", "bad_parameter")
                    data = await value.read()
                    if not data and not value.filename:
                        continue  # an empty file input of a browser form: no image given
                    fields[key] = data
                else:
                    if key == "image":
                        raise ApiError(400, "field 'image' must be a file upload (multipart/form-data)", "bad_parameter")
                    fields[key] = value
        finally:
            await form.close()
        return fields

    async def image_pixels(fields: dict[str, Any]) -> Any:
        """[3, S, S] pixels of the request's `image` upload or `image_url`."""
        if ("image" in fields) == ("image_url" in fields):
            raise ApiError(400, "give exactly one of 'image' (a file upload) or 'image_url'", "missing_image")
        if "image_url" in fields:
            data = await in_pool(fetch_url, url_of(fields["image_url"]), url_policy)
            return await in_pool(service.pixels_of, data, "image_url")
        return await in_pool(service.pixels_of, fields["image"], "image")

    def url_of(value: str) -> str:
        if not options.allow_urls:
            raise ApiError(400, "image_url: this server does not fetch URLs (start it with --allow-urls to allow "
                                "public http(s) addresses), upload the image instead", "urls_not_allowed")
        return value

    async def search_vector(vector: Any, k: int) -> JSONResponse:
        return JSONResponse({"results": await in_pool(service.search, vector, k)})

    # -- endpoints --

    async def health(request: Request) -> JSONResponse:
        check_params(request, ())
        return JSONResponse(service.health())

    async def search_get(request: Request) -> JSONResponse:
        params = check_params(request, ("q", "k", "id", "image_url"))
        k = parse_k(params.get("k"))
        given = [name for name in ("q", "id", "image_url") if name in params]
        if len(given) != 1:
            raise ApiError(400, "give exactly one of q (text), id (an item: more like it) or image_url", "missing_query")
        if "q" in params:
            vector = await model_result(lambda: service.embed_text(params["q"]))
        elif "id" in params:
            vector = service.item_vector(service.check_item(params["id"]))
        else:
            url_of(params["image_url"])
            pixels = await image_pixels({"image_url": params["image_url"]})
            vector = await model_result(lambda: service.embed_pixels(pixels))
        return await search_vector(vector, k)

    async def search_post(request: Request) -> JSONResponse:
        params = check_params(request, ("k",))
        fields = await read_form(request, ("image", "image_url", "k"))
        if "k" in params and "k" in fields:
            raise ApiError(400, "k given both in the URL and in the form", "bad_parameter")
        k = parse_k(fields.get("k", params.get("k")))
        if "image_url" in fields:
            url_of(fields["image_url"])
        pixels = await image_pixels(fields)
        vector = await model_result(lambda: service.embed_pixels(pixels))
        return await search_vector(vector, k)

    async def classify(request: Request) -> JSONResponse:
        check_params(request, ())
        fields = await read_form(request, ("image", "image_url", "labels"))
        if "labels" not in fields:
            raise ApiError(400, "labels: missing (a JSON list or comma-separated text)", "bad_labels")
        labels = parse_labels(fields["labels"], limits)
        if "image_url" in fields:
            url_of(fields["image_url"])
        pixels = await image_pixels(fields)
        image_future = model_result(lambda: service.embed_pixels(pixels))
        weights_future = model_result(lambda: service.label_weights(labels))
        vector, weights = await asyncio.gather(image_future, weights_future)
        return JSONResponse({"labels": service.classify(vector, labels, weights)})

    async def thumb(request: Request) -> Response:
        check_params(request, ())
        row = service.check_item(request.path_params["id"])
        data = await in_pool(service.thumbnail, row)
        return Response(data, media_type="image/jpeg")

    async def static(request: Request) -> Response:
        name, media_type = STATIC[request.url.path]
        text = resources.files("clipforge.serve").joinpath("static", name).read_bytes()
        return Response(text, media_type=media_type)

    # -- errors as JSON --

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return JSONResponse(exc.payload(), status_code=exc.status)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            payload = {"error": f"no such endpoint: {request.url.path[:200]}", "code": "not_found"}
        elif exc.status_code == 405:
            payload = {"error": f"method {request.method} is not allowed for {request.url.path[:200]}",
                       "code": "method_not_allowed"}
        else:
            payload = {"error": str(exc.detail), "code": "bad_request"}
        return JSONResponse(payload, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log", "code": "internal"},
                            status_code=500)

    async def lifespan(app: Starlette) -> Any:
        service.encoder.start()
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    routes = [Route(path, static, methods=["GET"]) for path in STATIC] + [
        Route("/api/health", health, methods=["GET"]),
        Route("/api/search", search_get, methods=["GET"]),
        Route("/api/search", search_post, methods=["POST"]),
        Route("/api/classify", classify, methods=["POST"]),
        Route("/api/thumb/{id}", thumb, methods=["GET"]),
    ]
    from contextlib import asynccontextmanager

    from starlette.middleware import Middleware

    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Guard, options=options, max_upload=limits.max_upload_bytes)],
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: internal_error},
        lifespan=asynccontextmanager(lifespan),
    )
    return app


# ---- running it ------------------------------------------------------------------------------------


def run_server(
    service: SearchService, host: str = "127.0.0.1", port: int = 8765, options: Optional[ServeOptions] = None, *,
    log_level: str = "info", on_ready: Optional[Callable[[str], None]] = None,
) -> None:
    """Serve until interrupted (Ctrl-C). Refuses a non-loopback `host` without a token (`check_bind`)."""
    options = options or ServeOptions()
    try:
        import uvicorn
    except ImportError as e:
        raise ServeError(f"{MISSING_EXTRA_HINT} ({e})") from None

    check_bind(host, options.token)
    if options.allowed_hosts is not None:
        if is_loopback_host(host):
            options = replace(options, extra_hosts=(*options.extra_hosts, host))
        else:
            options = replace(options, allowed_hosts=None)  # reached by other names; the token guards it
    config = uvicorn.Config(create_app(service, options), host=host, port=port, log_level=log_level,
                            server_header=False, timeout_keep_alive=5)
    server = uvicorn.Server(config)
    if on_ready is not None:
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{port}/")
    try:
        server.run()
    finally:
        service.close()
