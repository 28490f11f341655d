"""The docker executor: runs the task's command in a container of its image.

The task's workspace is bind-mounted at ``/workspace`` (result files go under
``/workspace/out``); memory and CPU limits come from the task's resources; the container has
no network unless the task asks for one; GPUs are device requests. Output is captured with a
size bound, and ``hive:progress`` lines on stdout report progress as with the process
executor. Every container carries ``hive.task``, ``hive.node`` and ``hive.attempt`` labels,
is removed when the attempt ends (or is stopped), and a node removes the ones a previous
life of it left behind when it starts.

The docker SDK is blocking: every call goes through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import structlog
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.types import DeviceRequest, LogConfig
from docker.utils import parse_repository_tag

from node.context import Outcome, TaskContext
from node.executors.bounded import BoundedOutput
from node.executors.process import KILL_GRACE_S, PROGRESS_PREFIX
from node.settings import NodeSettings

log = structlog.get_logger("hive.node.docker")

WORKSPACE = "/workspace"
API_TIMEOUT_S = 30.0  # control calls (create, start, remove); waits and output streams have no timeout
OUTPUT_DRAIN_S = 10.0
SIGKILLED = 128 + 9  # the exit code of a container whose process was SIGKILLed (the OOM killer does that)
OOM_FLAG_WAIT_S = 2.0
MAX_LINE = 4096  # a longer stdout "line" is not a progress report
GB = 1024**3


def labels_for(ctx: TaskContext) -> dict[str, str]:
    return {"hive.task": ctx.task_id, "hive.node": ctx.node_id, "hive.attempt": str(ctx.attempt)}


def memory_limit(ctx: TaskContext) -> int | None:
    """Bytes, or None for no limit (memory_gb 0)."""
    memory_gb = ctx.spec.resources.memory_gb
    return int(memory_gb * GB) if memory_gb > 0 else None


def container_config(ctx: TaskContext) -> dict[str, Any]:
    """Keyword arguments of ``containers.create`` for one attempt."""
    spec = ctx.spec
    env = dict(spec.env)
    env.update({"HIVE_TASK_ID": ctx.task_id, "HIVE_ATTEMPT": str(ctx.attempt), "HIVE_WORKSPACE": WORKSPACE})
    config: dict[str, Any] = {
        "command": list(spec.command) or None,  # none: the image's own CMD
        "environment": env,
        "working_dir": spec.cwd or WORKSPACE,
        "volumes": {str(ctx.workspace.resolve()): {"bind": WORKSPACE, "mode": "rw"}},
        # the node's own uid, so the node can read the result files and delete the workspace
        "user": f"{os.getuid()}:{os.getgid()}",
        "labels": labels_for(ctx),
        "name": f"hive-{ctx.task_id}-{ctx.attempt}-{ctx.node_id}",
        "network_mode": "bridge" if spec.network else "none",
        # a tiny init as PID 1 forwards a stop's TERM to the command and reaps its zombies
        "init": True,
        # bound what the engine keeps of a chatty container's output while it runs
        "log_config": LogConfig(type=LogConfig.types.JSON, config={"max-size": "16m", "max-file": "2"}),
    }
    limit = memory_limit(ctx)
    if limit is not None:
        # the same swap limit, so exceeding the limit is an OOM kill rather than swapping
        config.update(mem_limit=limit, memswap_limit=limit)
    if spec.resources.cpu > 0:
        config["nano_cpus"] = int(spec.resources.cpu * 1e9)
    if ctx.gpus:
        config["device_requests"] = [DeviceRequest(device_ids=[str(g) for g in ctx.gpus], capabilities=[["gpu"]])]
    return config


class _Reader:
    """Collects a container's demultiplexed output (in a worker thread) into bounded buffers
    and hands complete ``hive:progress`` lines to ``on_progress``."""

    def __init__(self, limit: int, on_progress: Callable[[str], None]) -> None:
        self.out = BoundedOutput(limit)
        self.err = BoundedOutput(limit)
        self.on_progress = on_progress
        self.partial = b""

    def consume(self, frames: Iterator[tuple[bytes | None, bytes | None]]) -> None:
        for stdout, stderr in frames:
            if stdout:
                self.out.add(stdout)
                self._scan(stdout)
            if stderr:
                self.err.add(stderr)

    def _scan(self, chunk: bytes) -> None:
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        if len(self.partial) > MAX_LINE:
            self.partial = b""
        for line in lines:
            if line.startswith(PROGRESS_PREFIX):
                self.on_progress(line[len(PROGRESS_PREFIX) :].decode("utf-8", "replace").strip())


class DockerExecutor:
    name = "docker"
    defers_start = False

    def __init__(self, client: docker.DockerClient, output_limit: int = 64 * 1024) -> None:
        self.client = client
        self.output_limit = output_limit
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(cls, settings: NodeSettings) -> DockerExecutor | None:
        """An executor on the local engine ($DOCKER_HOST or the default socket), or None
        when no engine answers. Removes containers a previous life of this node left."""
        try:
            client = await asyncio.to_thread(docker.from_env, timeout=int(API_TIMEOUT_S))
            await asyncio.to_thread(client.ping)
        except (DockerException, OSError) as exc:
            log.debug("no docker engine", error=str(exc))
            return None
        executor = cls(client)
        await executor.remove_leftovers(settings.node_id)
        return executor

    async def remove_leftovers(self, node_id: str) -> None:
        """A node that crashed never removed its containers; they are of no use now (their
        attempts are reported interrupted), so remove them."""
        try:
            found = await asyncio.to_thread(
                self.client.containers.list, all=True, filters={"label": f"hive.node={node_id}"}
            )
        except DockerException as exc:
            log.warning("cannot list leftover containers", error=str(exc))
            return
        for container in found:
            log.info("removing a container left by a previous run", container=container.name)
            await asyncio.to_thread(self._remove, container, False)

    async def run(self, ctx: TaskContext) -> Outcome:
        if not ctx.spec.image:
            return Outcome.failure("a docker task needs an image")
        (ctx.workspace / "out").mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            container = await self._create(ctx)
        except DockerException as exc:
            return Outcome.failure(f"cannot create the container: {_explain(exc)}")
        graceful = True  # a stop (cancel, timeout) gets TERM and a grace period
        reader = _Reader(self.output_limit, self._progress_reporter(ctx))
        try:
            reading = await self._attach_and_start(container, reader)
            status = await asyncio.to_thread(container.wait)
            graceful = False
            await self._drain(reading)
            await asyncio.to_thread(container.reload)
            await self._await_oom_flag(ctx, container, status)
        except DockerException as exc:
            graceful = False
            return Outcome.failure(f"docker: {_explain(exc)}", stdout=reader.out.text(), stderr=reader.err.text())
        finally:
            # cancelled or not, the container goes; shielded so that a stop cannot interrupt the removal
            await asyncio.shield(asyncio.to_thread(self._remove, container, graceful))
        return self._outcome(ctx, container, status, reader, time.monotonic() - started)

    async def _await_oom_flag(self, ctx: TaskContext, container: Container, status: dict[str, Any]) -> None:
        """A container SIGKILLed under a memory limit was probably OOM killed, but the daemon
        may record that (``State.OOMKilled``, from the kernel's OOM event) just after the
        exit: ask again for a moment before saying it merely exited."""
        if int(status.get("StatusCode", -1)) != SIGKILLED or not memory_limit(ctx):
            return
        deadline = time.monotonic() + OOM_FLAG_WAIT_S
        while not container.attrs.get("State", {}).get("OOMKilled") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            await asyncio.to_thread(container.reload)

    async def _create(self, ctx: TaskContext) -> Container:
        creating = asyncio.ensure_future(asyncio.to_thread(self._create_blocking, ctx))
        try:
            return await asyncio.shield(creating)
        except asyncio.CancelledError:
            # stopped while creating (or pulling): the container may still appear; remove it then
            creating.add_done_callback(self._discard)
            raise

    def _create_blocking(self, ctx: TaskContext) -> Container:
        image = ctx.spec.image or ""
        try:
            return self.client.containers.create(image, **container_config(ctx))
        except ImageNotFound:
            pass
        repo, tag = parse_repository_tag(image)
        log.info("pulling image", image=image)
        self.client.images.pull(repo, tag=tag or "latest")  # a tag, or it would pull every tag
        return self.client.containers.create(image, **container_config(ctx))

    def _discard(self, creating: asyncio.Future[Container]) -> None:
        if creating.cancelled() or creating.exception() is not None:
            return
        task = asyncio.ensure_future(asyncio.to_thread(self._remove, creating.result(), False))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _progress_reporter(self, ctx: TaskContext) -> Callable[[str], None]:
        """Called from the output thread with the text after ``hive:progress``."""
        loop = asyncio.get_running_loop()

        def report(text: str) -> None:
            parts = text.split(" ", 1)
            try:
                fraction = float(parts[0])
            except ValueError:
                return
            # best effort, like the process executor's progress: nobody waits for it
            sending = ctx.progress(fraction, parts[1] if len(parts) > 1 else "")
            try:
                asyncio.run_coroutine_threadsafe(sending, loop)
            except RuntimeError:  # the loop is gone: the node is shutting down
                sending.close()

        return report

    async def _attach_and_start(self, container: Container, reader: _Reader) -> asyncio.Task[None]:
        """Attach before starting, as ``docker run`` does, so that no early output is missed.
        Not with ``logs`` (most clients leave it off): with it, a quick container's whole
        output once came back twice, from the live stream and from the log's replay."""
        frames = await asyncio.to_thread(container.attach, stdout=True, stderr=True, stream=True, logs=False, demux=True)
        # the stream ends when the container stops or is removed
        reading = asyncio.create_task(asyncio.to_thread(_consume, reader, frames))
        self._background.add(reading)  # kept until it ends, even when the attempt is stopped
        reading.add_done_callback(self._background.discard)
        await asyncio.to_thread(container.start)
        return reading

    async def _drain(self, reading: asyncio.Task[None]) -> None:
        """The output stream ends right after the container; wait a little for its tail."""
        try:
            await asyncio.wait_for(asyncio.shield(reading), OUTPUT_DRAIN_S)
        except TimeoutError:
            log.warning("container output did not end with the container; keeping what arrived")

    def _outcome(
        self,
        ctx: TaskContext,
        container: Container,
        status: dict[str, Any],
        reader: _Reader,
        duration: float,
    ) -> Outcome:
        stdout, stderr = reader.out.text(), reader.err.text()
        code = int(status.get("StatusCode", -1))
        kw: dict[str, Any] = {"exit_code": code, "stdout": stdout, "stderr": stderr}
        if code == 0:
            return Outcome(ok=True, **kw)
        state = container.attrs.get("State", {})
        details = f"ran {duration:.2f}s in {ctx.spec.image}"
        if state.get("OOMKilled"):
            limit = memory_limit(ctx)
            where = f"its memory limit of {limit / 1024**2:.0f} MiB" if limit else "the memory available"
            return Outcome.failure(f"OOM killed: exceeded {where}", reason="oom", details=details, **kw)
        tail = stderr.strip().splitlines()[-1:] or [""]
        error = f"exited with code {code}" + (f": {tail[0][:200]}" if tail[0] else "")
        if status.get("Error"):
            error += f" ({status['Error'].get('Message', '')})"
        return Outcome.failure(error, reason="exit_code", details=details, **kw)

    def _remove(self, container: Container, graceful: bool) -> None:
        try:
            if graceful:
                container.stop(timeout=int(KILL_GRACE_S))  # TERM, then KILL after the grace period
            container.remove(force=True)
        except NotFound:
            pass  # already gone
        except DockerException as exc:
            log.warning("cannot remove container", container=container.name, error=_explain(exc))


def _consume(reader: _Reader, frames: Iterator[tuple[bytes | None, bytes | None]]) -> None:
    try:
        reader.consume(frames)
    except (DockerException, OSError, ValueError):
        pass  # the stream broke (the container was removed under it): keep what was read


def _explain(exc: DockerException) -> str:
    if isinstance(exc, APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc) or type(exc).__name__
