"""The aiohttp application: pages, the API, logins, the live stream, /health and /metrics.

Logins: ``/login?token=T`` (or ``/?token=T``, the URL ``hive web token`` prints) checks the
token and sets it as an HttpOnly, SameSite=Strict cookie; API clients send
``Authorization: Bearer T`` instead. Every change is a POST, and a POST authenticated by
the cookie must carry the ``X-Hive-Request`` header (and a same-origin ``Origin`` when the
browser sends one): a cross-site page can make a browser send the cookie, never that header.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import structlog
from aiohttp import web

from edge.errors import Denied, HiveError, NotFound, Unreachable
from edge.health import HttpServer, add_routes
from hive.web import api, keys, openapi, sse
from hive.web.actors import Actors, client_for, reader_target
from hive.web.auth import COOKIE, CSRF_HEADER, BadToken, load_secret, person, sign
from hive.web.live import Hub
from hive.web.metrics import Metrics
from hive.web.query import BadQuery

log = structlog.get_logger("hive.web")

STATIC = Path(__file__).parent / "static"
PUBLIC = ("/", "/login", "/logout", "/health", "/metrics", "/api/openapi.json", "/favicon.ico")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _status_of(exc: Exception) -> int:
    if isinstance(exc, BadToken):
        return 401
    if isinstance(exc, Denied):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, api.Conflict):
        return 409
    if isinstance(exc, Unreachable):
        return 503
    return 400  # BadQuery, HiveError, msgspec's errors: the caller's to fix


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure is one JSON line with a 4xx (503 when the cluster does not answer)."""
    metrics = request.app[keys.METRICS]
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = web.json_response({"error": exc.reason}, status=exc.status)
    except (BadQuery, BadToken, HiveError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        response = web.json_response({"error": str(exc).splitlines()[0][:500] or type(exc).__name__}, status=_status_of(exc))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug: logged in full, the caller gets one line
        log.exception("request failed", path=request.path)
        response = web.json_response({"error": f"internal error: {type(exc).__name__}"}, status=500)
    metrics.requests.labels(str(response.status)).inc()
    return response


def _token_of(request: web.Request) -> tuple[str | None, bool]:
    """(token, whether it came in an Authorization header)."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip(), True
    return request.cookies.get(COOKIE), False


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC or request.path.startswith("/static/"):
        return await handler(request)
    token, bearer = _token_of(request)
    if not token:
        raise BadToken("not logged in: open the URL `hive web token NAME` prints, or send Authorization: Bearer")
    request[keys.PERSON] = person(request.app[keys.STORE], request.app[keys.SECRET], token)
    if request.method not in SAFE_METHODS and not bearer:
        if request.headers.get(CSRF_HEADER) != "1":
            raise Denied(f"a change needs the {CSRF_HEADER} header (cross-site requests are refused)")
        origin = request.headers.get("Origin")
        if origin and origin != f"{request.scheme}://{request.host}":
            raise Denied(f"cross-origin request from {origin[:100]} refused")
    return await handler(request)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")  # a login URL carries its token
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")


async def index(request: web.Request) -> web.StreamResponse:
    if "token" in request.query:
        return await login(request)
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def login(request: web.Request) -> web.StreamResponse:
    token = request.query.get("token", "")
    who = person(request.app[keys.STORE], request.app[keys.SECRET], token)
    response = web.HTTPFound("/#/")
    max_age = max(1, who.expires - int(time.time()))
    response.set_cookie(COOKIE, token, max_age=max_age, httponly=True, samesite="Strict", path="/")
    log.info("logged in", person=who.name, role=who.role)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPFound("/#/")
    response.del_cookie(COOKIE, path="/")
    raise response


DOCUMENT = openapi.document()


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)


def build(hub: Hub, actors: Actors, store: Path, secret: bytes) -> web.Application:
    app = web.Application(middlewares=[errors, auth], client_max_size=api.MAX_BODY)
    metrics = Metrics()
    app[keys.HUB], app[keys.ACTORS], app[keys.METRICS] = hub, actors, metrics
    app[keys.STORE], app[keys.SECRET] = store, secret
    app.on_response_prepare.append(_headers)
    app.router.add_get("/", index)
    app.router.add_get("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/api/openapi.json", openapi_json)
    app.router.add_get("/api/stream", sse.stream)
    app.router.add_static("/static", STATIC)
    api.add_routes(app)

    async def check(name: str) -> tuple[bool, str]:
        return (await hub.health())[name]

    def refresh() -> None:
        metrics.connected.set(1 if hub.connected else 0)
        for stream, count in hub.counts.items():
            metrics.events.labels(stream).set(count)

    checks: dict[str, Any] = {name: (lambda name=name: check(name)) for name in ("nats", "coordinator", "lag")}
    add_routes(app, checks, metrics.registry, refresh)
    return app


async def serve(
    server: str | None,
    data: Path,
    creds: Path | None,
    ca: Path | None,
    host: str,
    port: int,
    lag_limit: int = 1000,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run until cancelled: connect, follow the log, answer HTTP on ``host:port``."""
    store = data / "auth"
    secret = load_secret(store)
    reader = await client_for(reader_target(server, data, creds, ca), "web", persistent=True)
    hub = Hub(reader, lag_limit)
    actors = Actors(server, data, ca)
    site: HttpServer | None = None
    try:
        await hub.start()
        site = HttpServer(build(hub, actors, store, secret), port, host)
        bound = await site.start()
        url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}"
        log.info("web ready", url=url, reader=reader.user)
        if on_ready is not None:
            on_ready(url)
        await asyncio.Event().wait()
    finally:
        if site is not None:
            await site.stop()
        await hub.stop()
        await actors.close()
        await reader.close()


__all__ = ["build", "serve", "sign"]
