"""``/health`` and ``/metrics`` over HTTP, for every service that opts in (``--http-port``).

A service hands in its checks: async callables returning ``(ok, detail)``. ``/health``
runs them all on each request and answers 200 when every one passes and 503 otherwise,
with each check's result in the JSON body, so a load balancer and a person read the same
answer (never a constant "ok"). ``/metrics`` is the Prometheus text of the service's own
registry (prometheus_client), so two services in one test process never share counters.

Nothing here is on a service's hot path: checks run, and gauges read from state are
refreshed, only when someone asks.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = structlog.get_logger("edge.health")

Check = Callable[[], Awaitable[tuple[bool, str]]]
# refreshes what a scrape renders; may be a plain function or a coroutine function
BeforeScrape = Callable[[], Awaitable[None] | None]
CHECK_TIMEOUT_S = 2.0


async def run_checks(
    checks: dict[str, Check], timeout: float | None = None
) -> tuple[bool, dict[str, dict[str, object]]]:
    """Every check's verdict, run concurrently; a check that raises or hangs past
    ``timeout`` (default ``CHECK_TIMEOUT_S``) fails. No checks at all is not healthy:
    nothing was verified."""
    limit = CHECK_TIMEOUT_S if timeout is None else timeout

    async def one(check: Check) -> tuple[bool, str]:
        try:
            ok, detail = await asyncio.wait_for(check(), limit)
            return bool(ok), str(detail)
        except TimeoutError:
            return False, f"no answer within {limit:g} s"
        except Exception as exc:  # a broken check is an unhealthy service, not a 500
            return False, f"{type(exc).__name__}: {exc}"[:500]

    names = list(checks)
    verdicts = await asyncio.gather(*(one(checks[n]) for n in names))
    body = {n: {"ok": ok, "detail": detail} for n, (ok, detail) in zip(names, verdicts, strict=True)}
    return bool(verdicts) and all(ok for ok, _ in verdicts), body


def add_routes(
    app: web.Application,
    checks: dict[str, Check],
    registry: CollectorRegistry,
    before_scrape: BeforeScrape | None = None,
    about: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Add ``GET /health`` and ``GET /metrics`` to ``app``. ``before_scrape`` refreshes
    gauges read from state (tasks by state, lag) just before they are rendered; a failure
    there is logged and the metrics are rendered anyway. ``about`` adds fields to the
    health body (the service, its id, a coordinator's role)."""

    async def health(_: web.Request) -> web.Response:
        started = time.monotonic()
        ok, body = await run_checks(checks)
        extra: dict[str, Any] = {}
        if about is not None:
            try:
                extra = dict(about())
            except Exception as exc:
                extra = {"about_error": f"{type(exc).__name__}: {exc}"[:300]}
        answer = {"ok": ok, **extra, "checks": body, "took_ms": round((time.monotonic() - started) * 1000, 1)}
        return web.json_response(answer, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        if before_scrape is not None:
            try:
                result = before_scrape()
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, CHECK_TIMEOUT_S)  # type: ignore[arg-type]
            except Exception as exc:  # stale gauges beat no metrics at all
                log.debug("refreshing metrics failed", error=f"{type(exc).__name__}: {exc}"[:300])
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)


class HttpServer:
    """A small aiohttp site on ``host:port`` in the running loop; ``port=0`` picks one."""

    def __init__(self, app: web.Application, port: int, host: str = "127.0.0.1") -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()  # e.g. the port is taken: leave nothing half-started
            raise
        self._runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Close the site; never raises (it runs in services' shutdown paths)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                await runner.cleanup()
            except Exception as exc:
                log.warning("closing the health and metrics site failed", error=f"{type(exc).__name__}: {exc}"[:300])
