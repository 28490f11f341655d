"""Typed keys of what the application and each request carry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from hive.web.actors import Actors
    from hive.web.live import Hub
    from hive.web.metrics import Metrics

HUB: web.AppKey[Hub] = web.AppKey("hub")
ACTORS: web.AppKey[Actors] = web.AppKey("actors")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
STORE: web.AppKey[Path] = web.AppKey("store")  # the key store: who may log in, as what
SECRET: web.AppKey[bytes] = web.AppKey("secret")
PERSON = "person"  # request[PERSON]: who is logged in (set by the auth middleware)
