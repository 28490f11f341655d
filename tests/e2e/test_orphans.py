"""Work a node started dies with the node (node/reaper.py).

A task process runs in a process group of its own, out of reach of a SIGKILL of the node's
group; without the reaper it would finish while the coordinator runs the task again
elsewhere. Each task here is a shell script that leaves a marker file when it starts and
when it ends, and keeps a grandchild (``sleep 30``) to show that the whole group dies: a
killed attempt must never reach its end marker, so every task ends exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from events.task import TaskSpec
from hive.client import HiveClient
from node.reaper import STATE_FILE, Reaper, sweep
from tests.cluster import Proc, Server, coordinator, node
from tests.e2e.test_recovery import completions, wait_counts

pytestmark = pytest.mark.slow

FAST = ("--heartbeat", "0.5", "--no-docker", "--max-tasks", "4")
SCRIPT = (
    'touch "$MARK/$HIVE_TASK_ID.$HIVE_ATTEMPT.$$.start"; '
    "sleep 30 >/dev/null 2>&1 & "  # the grandchild: the same process group, not waited for
    'sleep "$HOLD"; kill $!; '
    'touch "$MARK/$HIVE_TASK_ID.$HIVE_ATTEMPT.$$.end"'
)
Key = tuple[int, float]  # pid and start time: a recycled pid is another process


def workload(n: int, mark: Path, hold: float) -> list[tuple[str, TaskSpec]]:
    run = time.time_ns()
    spec = TaskSpec(command=["sh", "-c", SCRIPT], env={"MARK": str(mark), "HOLD": f"{hold:g}"}, max_attempts=3)
    return [(f"orph-{run}-{i}", spec) for i in range(n)]


def processes_of(node_id: str) -> dict[Key, tuple[str, list[str]]]:
    """The live processes started by tasks of ``node_id``: (pid, started) -> (task, argv)."""
    found = {}
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:  # dead, only not reaped yet
                continue
            env = proc.environ()
            if env.get("HIVE_NODE_ID") == node_id:
                found[(proc.pid, proc.create_time())] = (env.get("HIVE_TASK_ID", ""), proc.cmdline())
        except (psutil.Error, OSError):
            continue
    return found


def alive(keys: set[Key]) -> set[Key]:
    left = set()
    for pid, started in keys:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                left.add((pid, started))
        except psutil.Error:
            continue
    return left


async def wait_until(check, what: str, timeout: float, since: float | None = None) -> float:  # type: ignore[no-untyped-def]
    """Seconds (from ``since``, a monotonic time, or now) until ``check()`` held."""
    start = time.monotonic() if since is None else since
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} within {timeout:g}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def victim_tasks_running(client: HiveClient, node_id: str, n: int) -> list[str]:
    """Once all ``n`` tasks run: those on ``node_id``, after each has its grandchild up."""
    await wait_counts(client, n, state="running", timeout=30)
    on_node = [t["task_id"] for t in await client.tasks(state="running") if t["node_id"] == node_id]
    assert on_node, "no task went to the node to be killed"

    def grandchildren_up() -> bool:
        sleeping = {task for task, argv in processes_of(node_id).values() if argv[:2] == ["sleep", "30"]}
        return set(on_node) <= sleeping

    await wait_until(grandchildren_up, "not every task on the node has its grandchild", 15)
    return on_node


def recorded(state: Path) -> list[str]:
    """The process groups a reaper recorded (the file appears with the first one)."""
    return state.read_text().split() if state.exists() else []


def markers(mark: Path) -> tuple[Counter[str], Counter[str]]:
    starts: Counter[str] = Counter()
    ends: Counter[str] = Counter()
    for path in mark.iterdir():
        task_id, _attempt, _pid, kind = path.name.rsplit(".", 3)
        (starts if kind == "start" else ends)[task_id] += 1
    return starts, ends


async def assert_each_ran_to_its_end_once(
    client: HiveClient, items: list[tuple[str, TaskSpec]], mark: Path, killed: list[str]
) -> None:
    await wait_counts(client, len(items), timeout=90)
    completed = Counter(t["task_id"] for t in await client.tasks(state="completed"))
    assert all(completed[t] == 1 for t, _ in items), completed
    counts = await completions(client)
    assert all(counts[t] == 1 for t, _ in items), counts
    starts, ends = markers(mark)
    assert {t: ends[t] for t, _ in items} == {t: 1 for t, _ in items}, "a command ran to its end twice (or never)"
    assert all(starts[t] >= 2 for t in killed), starts  # the killed attempt started, and never ended


@pytest.fixture
def cluster_with_victim(fresh_server: Server) -> Iterator[tuple[Proc, Proc]]:
    coord = coordinator(fresh_server, "--missed-heartbeats", "3", "--startup-grace", "0.5").start()
    victim = node(fresh_server, "victim", *FAST).start()
    survivor = node(fresh_server, "survivor", *FAST).start()
    try:
        yield victim, survivor
    finally:
        for proc in (victim, survivor, coord):
            proc.stop()
        for key in alive(set(processes_of("victim")) | set(processes_of("survivor"))):
            os.kill(key[0], signal.SIGKILL)  # only if a test failed: leave nothing running


async def test_killed_node_takes_its_task_processes_along(
    fresh_server: Server, cluster_with_victim: tuple[Proc, Proc], tmp_path: Path
) -> None:
    victim, _ = cluster_with_victim
    mark = tmp_path / "marks"
    mark.mkdir()
    async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
        items = workload(8, mark, hold=3.0)
        await client.submit_many(items)
        on_victim = await victim_tasks_running(client, "victim", len(items))
        before = processes_of("victim")
        assert len(before) >= 2 * len(on_victim)  # at least sh and its grandchild, per task
        killed_at = time.monotonic()
        victim.kill9()
        gone = await wait_until(
            lambda: not alive(set(before)), "the killed node's task processes still run", 5, killed_at
        )
        assert not processes_of("victim")
        await assert_each_ran_to_its_end_once(client, items, mark, on_victim)
    print(f"\nnode SIGKILL -> its {len(before)} task processes gone: {gone:.3f}s")
    (fresh_server.directory / "orphans.json").write_text(json.dumps({"seconds": gone, "processes": len(before)}))


def reaper_of(proc: Proc) -> psutil.Process:
    assert proc.proc is not None
    children = psutil.Process(proc.proc.pid).children(recursive=True)
    found = [c for c in children if "node.reaper" in c.cmdline()]
    assert len(found) == 1, [c.cmdline() for c in children]
    return found[0]


async def test_node_and_reaper_killed_leftovers_are_swept_at_restart(
    fresh_server: Server, cluster_with_victim: tuple[Proc, Proc], tmp_path: Path
) -> None:
    victim, _ = cluster_with_victim
    mark = tmp_path / "marks"
    mark.mkdir()
    async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
        # long enough that the orphans still run when the node is back
        items = workload(8, mark, hold=8.0)
        await client.submit_many(items)
        on_victim = await victim_tasks_running(client, "victim", len(items))
        before = set(processes_of("victim"))
        state = fresh_server.directory / "work" / "victim" / STATE_FILE
        assert len(recorded(state)) == len(on_victim)
        reaper = reaper_of(victim)
        reaper.send_signal(signal.SIGSTOP)  # so that it cannot act on the node's death
        victim.kill9()
        reaper.kill()
        await wait_until(lambda: not alive({(reaper.pid, reaper.create_time())}), "the reaper survived", 5)
        await asyncio.sleep(0.5)
        assert alive(before) == before  # nothing else stops them: they would run on, and finish
        victim.start()
        await wait_until(lambda: not alive(before), "the previous life's task processes survived the restart", 3)
        assert "killed task process groups that a previous run of this node left" in victim.text()
        await assert_each_ran_to_its_end_once(client, items, mark, on_victim)


async def test_reaper_that_died_is_replaced_and_gets_the_running_groups(tmp_path: Path) -> None:
    reaper = await Reaper.start("replaced", tmp_path, docker=False)
    env = dict(os.environ, HIVE_NODE_ID="replaced")
    task = await asyncio.create_subprocess_exec("sleep", "30", env=env, start_new_session=True)
    try:
        reaper.track(task.pid)
        first = reaper._proc
        assert first is not None
        first.kill()
        await wait_until(lambda: reaper._proc is not first and reaper._fd is not None, "no new reaper", 10)
        await wait_until(lambda: recorded(tmp_path / STATE_FILE) == [str(task.pid)], "not registered", 10)
        await reaper.close()  # a close with a group still registered: the reaper kills it
        assert await asyncio.wait_for(task.wait(), 5) == -signal.SIGKILL
        assert (tmp_path / STATE_FILE).read_text() == ""
    finally:
        if task.returncode is None:
            task.kill()
            await task.wait()


async def test_a_full_pipe_never_blocks_the_node_and_loses_nothing(tmp_path: Path) -> None:
    reaper = await Reaper.start("busy", tmp_path, docker=False)
    proc = reaper._proc
    assert proc is not None
    try:
        proc.send_signal(signal.SIGSTOP)  # a reaper that does not read: its pipe fills up
        started = time.monotonic()
        for pgid in range(10_000_000, 10_020_000):
            reaper.track(pgid)
        assert time.monotonic() - started < 1.0
        assert reaper._pending  # more than the pipe holds: kept, in order
        proc.send_signal(signal.SIGCONT)
        await wait_until(lambda: len(recorded(tmp_path / STATE_FILE)) == 20_000, "not all registered", 10)
    finally:
        proc.send_signal(signal.SIGCONT)
        for pgid in range(10_000_000, 10_020_000):
            reaper.untrack(pgid)  # no such groups: nothing to kill at close
        await reaper.close()


async def test_restart_sweep_spares_processes_of_others(tmp_path: Path) -> None:
    mine = await asyncio.create_subprocess_exec(
        "sleep", "30", env=dict(os.environ, HIVE_NODE_ID="me"), start_new_session=True
    )
    other = await asyncio.create_subprocess_exec(
        "sleep", "30", env=dict(os.environ, HIVE_NODE_ID="me-too"), start_new_session=True
    )
    plain = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)  # a recycled pid, say
    state = tmp_path / STATE_FILE
    try:
        state.write_text(f"{mine.pid}\n{other.pid}\n{plain.pid}\n999999999\n")
        assert sweep("me", state) == [mine.pid]
        assert await asyncio.wait_for(mine.wait(), 5) == -signal.SIGKILL
        await asyncio.sleep(0.1)
        assert other.returncode is None and plain.returncode is None
        assert state.read_text() == ""
    finally:
        for proc in (mine, other, plain):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


# -- docker ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small image already on this machine (never pulled), or the test image built from a
    local busybox binary as tests/e2e/test_docker.py does."""
    import docker
    from docker.errors import DockerException, ImageNotFound

    from tests.e2e.test_docker import IMAGE, _import_image

    try:
        engine = docker.from_env(timeout=10)
        engine.ping()
    except (DockerException, OSError) as exc:
        pytest.skip(f"no Docker engine: {exc}")
    try:
        for name in (IMAGE, "busybox:latest", "alpine:latest"):
            try:
                engine.images.get(name)
                return name
            except ImageNotFound:
                continue
    finally:
        engine.close()
    problem = _import_image(tmp_path_factory.mktemp("image"))
    if problem is not None:
        pytest.skip(f"no busybox or alpine image here, and none can be built without a registry: {problem}")
    return IMAGE


@pytest.mark.docker
async def test_killed_node_containers_are_removed(fresh_server: Server, local_image: str) -> None:
    import docker

    engine = docker.from_env(timeout=10)
    node_id = f"dvictim-{os.getpid()}"
    label = {"label": f"hive.node={node_id}"}

    def containers(status: str | None = None) -> list[str]:
        found = engine.containers.list(all=True, filters=label, ignore_removed=True)
        return [c.name for c in found if status is None or c.status == status]

    coord = coordinator(fresh_server, "--missed-heartbeats", "3", "--startup-grace", "0.5").start()
    victim = node(fresh_server, node_id, "--heartbeat", "0.5", "--docker", "--max-tasks", "2").start()
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            spec = TaskSpec(executor="docker", image=local_image, command=["sleep", "30"], max_attempts=3)
            await client.submit_many([(f"dock-{time.time_ns()}-{i}", spec) for i in range(2)])
            await wait_until(lambda: len(containers("running")) == 2, "the containers did not start", 30)
            killed_at = time.monotonic()
            victim.kill9()
            gone = await wait_until(
                lambda: not containers(), "the killed node's containers are still there", 20, killed_at
            )
        print(f"\nnode SIGKILL -> its containers removed: {gone:.3f}s")
    finally:
        victim.stop()
        coord.stop()
        for name in containers():
            engine.containers.get(name).remove(force=True)
        engine.close()


async def test_what_a_finished_task_left_running_ends_with_it(fresh_server: Server, tmp_path: Path) -> None:
    """A command that exits but leaves a background process in its group: the group ends
    with the task, so nothing of a finished task lives on."""
    coord = coordinator(fresh_server).start()
    worker = node(fresh_server, "tidy", *FAST).start()
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            script = 'sleep 30 >/dev/null 2>&1 & echo $! > "$MARK/left"'
            spec = TaskSpec(command=["sh", "-c", script], env={"MARK": str(tmp_path)})
            task_id = await client.submit(spec)
            assert (await client.wait(task_id, timeout=30))["state"] == "completed"
        left = int((tmp_path / "left").read_text())
        deadline = time.monotonic() + 5
        while psutil.pid_exists(left) and psutil.Process(left).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the task's background process outlived it"
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        coord.stop()
