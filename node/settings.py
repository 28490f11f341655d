"""Node settings: command-line flags, falling back to the seed's environment variables."""

from __future__ import annotations

import os

import msgspec

from events.subjects import valid_id


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


class NodeSettings(msgspec.Struct, kw_only=True):
    node_id: str
    data_dir: str = ".hive"
    max_cpu: float | None = None
    max_memory_gb: float | None = None
    max_tasks: int = 4
    gpus: list[int] | None = None
    docker: bool = True
    heartbeat_s: float = 2.0
    handler_modules: list[str] = []

    @classmethod
    def from_env(cls, **given: object) -> NodeSettings:
        """Explicit values win; unset ones come from NODE_ID, MAX_CPU_CORES, MAX_MEMORY_GB,
        MAX_CONCURRENT_TASKS, DOCKER_ENABLED, HEARTBEAT_INTERVAL."""
        values = {k: v for k, v in given.items() if v is not None}
        env = {
            "node_id": os.environ.get("NODE_ID"),
            "max_cpu": _env_float("MAX_CPU_CORES"),
            "max_memory_gb": _env_float("MAX_MEMORY_GB"),
            "max_tasks": int(os.environ["MAX_CONCURRENT_TASKS"]) if os.environ.get("MAX_CONCURRENT_TASKS") else None,
            "heartbeat_s": _env_float("HEARTBEAT_INTERVAL"),
        }
        for key, value in env.items():
            if key not in values and value is not None:
                values[key] = value
        if "docker" not in values:
            values["docker"] = _env_bool("DOCKER_ENABLED", True)
        if "node_id" not in values:
            from node.service import default_node_id

            values["node_id"] = default_node_id()
        settings = msgspec.convert(values, cls)
        # the bounds every reader applies to a registration (events.limits)
        if not 1 <= settings.max_tasks <= 10_000:
            raise ValueError("max tasks must be from 1 to 10000")
        if not 0.05 <= settings.heartbeat_s <= 60:
            raise ValueError("the heartbeat interval must be from 0.05 to 60 seconds")
        if (settings.max_cpu is not None and settings.max_cpu <= 0) or (settings.max_memory_gb is not None and settings.max_memory_gb <= 0):
            raise ValueError("a node must offer some CPU and memory")
        if not valid_id(settings.node_id):
            raise ValueError(f"node id {settings.node_id!r}: use letters, digits, '-' and '_' (1 to 64)")
        return settings
