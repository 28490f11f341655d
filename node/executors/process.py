"""The process executor: argv, env, working directory, timeout (applied by the node),
stdout/stderr captured with a size bound. A line ``hive:progress <fraction> [message]``
on stdout reports progress. Stopping kills the whole process group: TERM, then KILL.
The group is registered with the node's reaper while it runs, so it dies with the node."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from node.context import Outcome, ProcessTracker, TaskContext
from node.executors.bounded import BoundedOutput, pump

PROGRESS_PREFIX = b"hive:progress "
KILL_GRACE_S = 3.0


def task_env(ctx: TaskContext) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ctx.spec.env)
    env["HIVE_TASK_ID"] = ctx.task_id
    env["HIVE_ATTEMPT"] = str(ctx.attempt)
    env["HIVE_NODE_ID"] = ctx.node_id
    env["HIVE_WORKSPACE"] = str(ctx.workspace)
    if ctx.gpus or ctx.spec.resources.gpu == 0:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in ctx.gpus)
    return env


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        # the command ended; what it left running in its group ends with the task
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(proc.wait(), wait)
            return
        except TimeoutError:
            continue


async def _end(proc: asyncio.subprocess.Process, reaper: ProcessTracker | None) -> None:
    """Stop what is left of the group, then tell the reaper it is gone."""
    try:
        await _terminate(proc)
    finally:
        if reaper is not None:
            reaper.untrack(proc.pid)


class ProcessExecutor:
    name = "process"
    defers_start = False

    def __init__(self, output_limit: int = 64 * 1024) -> None:
        self.output_limit = output_limit

    async def run(self, ctx: TaskContext) -> Outcome:
        spec = ctx.spec
        if not spec.command:
            return Outcome.failure("no command given", reason="unrunnable")
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *spec.command,
                cwd=spec.cwd or str(ctx.workspace),
                env=task_env(ctx),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group, so a stop reaches children
            )
        except (OSError, ValueError) as exc:
            where = f" in {spec.cwd!r}" if spec.cwd else ""
            return Outcome.failure(f"cannot start {spec.command[0]!r}{where}: {exc}", exit_code=127, reason="unrunnable")
        if ctx.reaper is not None:
            ctx.reaper.track(proc.pid)  # its own session: the pid is the group's id
        out, err = BoundedOutput(self.output_limit), BoundedOutput(self.output_limit)

        async def on_line(line: bytes) -> None:
            if line.startswith(PROGRESS_PREFIX):
                parts = line[len(PROGRESS_PREFIX) :].decode("utf-8", "replace").strip().split(" ", 1)
                try:
                    await ctx.progress(float(parts[0]), parts[1] if len(parts) > 1 else "")
                except ValueError:
                    pass

        assert proc.stdout is not None and proc.stderr is not None
        try:
            await asyncio.gather(pump(proc.stdout, out, on_line), pump(proc.stderr, err), proc.wait())
        finally:
            # cancelled (stop, timeout) or failed: never leave the process group behind
            await asyncio.shield(_end(proc, ctx.reaper))
        code = proc.returncode
        kw = {"exit_code": code, "stdout": out.text(), "stderr": err.text()}
        if code == 0:
            return Outcome(ok=True, **kw)
        if code is not None and code < 0:
            return Outcome.failure(f"killed by signal {-code}", reason="exit_code", **kw)
        tail = err.text().strip().splitlines()[-1:] or [""]
        return Outcome.failure(
            f"exited with code {code}" + (f": {tail[0][:200]}" if tail[0] else ""),
            reason="exit_code",
            details=f"ran {time.monotonic() - started:.2f}s",
            **kw,
        )
