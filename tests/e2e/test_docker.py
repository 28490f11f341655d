"""The docker executor against a real Docker engine, and nodes without one.

There is no image registry here: the module fixture imports a tiny local image built from a
rootfs holding a static busybox (``.ci/docker-engine.sh`` does the same, and starts the
engine under CI). Without an engine the docker tests skip, except under ``CI=true`` where
they fail. The docker-enabled node runs on a server of this module; the tests that a node
without docker never gets docker tasks use the session cluster (nodes run with --no-docker).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from events.base import Resources
from events.task import TaskSpec
from hive.client import HiveClient
from node.service import Node
from node.settings import NodeSettings
from tests.cluster import Proc, Server, coordinator, hive, node

IMAGE = "hive-test/busybox:1"
APPLETS = ("sh", "echo", "cat", "ls", "sleep", "true", "false", "head", "tail", "dd", "tr", "wc", "mkdir", "rm", "id")
docker_test = pytest.mark.docker


def _docker(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def _engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "the docker command is not installed (CI runs .ci/docker-engine.sh)"
    try:
        probe = _docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30s"
    if probe.returncode != 0:
        return f"`docker info` failed: {(probe.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


def _import_image(workdir: Path) -> str | None:
    """Build IMAGE from a rootfs holding busybox (no registry to pull from)."""
    if _docker("image", "inspect", IMAGE).returncode == 0:
        return None
    busybox = "/bin/busybox" if os.path.exists("/bin/busybox") else shutil.which("busybox")
    if busybox is None:
        return "no busybox binary to build the test image from (apt-get install busybox-static)"
    root = workdir / "rootfs"
    for sub in ("bin", "tmp", "workspace"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy(busybox, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    archive = workdir / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".")
    done = _docker("import", str(archive), IMAGE, timeout=120)
    if done.returncode != 0:
        return f"`docker import` failed: {done.stderr.strip()}"
    check = _docker("run", "--rm", "--network", "none", IMAGE, "true")
    if check.returncode != 0:  # e.g. a dynamically linked busybox
        return f"the imported test image does not run: {check.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> str:
    problem = _engine_problem() or _import_image(tmp_path_factory.mktemp("image"))
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Docker engine under CI=true: {problem}")
        pytest.skip(f"no Docker engine: {problem}")
    return IMAGE


@pytest.fixture(scope="module")
def docker_cluster(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Proc]]:
    server = Server(tmp_path_factory.mktemp("docker")).start()
    dock = node(server, "dock", "--docker", "--max-tasks", "4", "--max-memory-gb", "4")
    procs = [coordinator(server), dock]
    try:
        for proc in procs:
            proc.start()
        yield server, dock
    finally:
        for proc in reversed(procs):
            proc.stop()
        server.stop()


@pytest.fixture
async def api(docker_cluster: tuple[Server, Proc]) -> AsyncIterator[HiveClient]:
    server, _ = docker_cluster
    async with await HiveClient.connect(server.url, server.directory) as client:
        yield client


def containers_of(task_id: str) -> list[str]:
    return _docker("ps", "-aq", "--filter", f"label=hive.task={task_id}").stdout.split()


async def wait_for(check, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g}s")
        await asyncio.sleep(0.1)


def docker_spec(*command: str, **kw: object) -> TaskSpec:
    return TaskSpec(executor="docker", image=IMAGE, command=list(command), **kw)  # type: ignore[arg-type]


# -- with an engine ---------------------------------------------------------------------


@docker_test
def test_result_file_is_stored_and_retrieved(docker_cluster: tuple[Server, Proc], tmp_path: Path) -> None:
    server, _ = docker_cluster
    script = "mkdir -p /workspace/out/sub && echo hello-result > /workspace/out/sub/greeting.txt && echo wrote it"
    done = hive(server, "submit", "--wait", "--json", "--image", IMAGE, "--", "sh", "-c", script)
    assert done.returncode == 0, done.stdout + done.stderr
    final = json.loads(done.stdout)
    task_id = final["task_id"]
    assert final["state"] == "completed", final
    assert final["stdout"] == "wrote it\n"
    digest = hashlib.sha256(b"hello-result\n").hexdigest()
    events = json.loads(hive(server, "task", task_id, "--json").stdout)["events"]
    completed = next(e for e in events if e["type"] == "TaskCompleted")
    assert completed["outputs"] == [{"name": "sub/greeting.txt", "size": 13, "sha256": digest}]

    fetched = hive(server, "results", task_id, "--dir", str(tmp_path / "res"), "--json")
    assert fetched.returncode == 0, fetched.stderr
    files = json.loads(fetched.stdout)["files"]
    assert [(f["name"], f["sha256"]) for f in files] == [("sub/greeting.txt", digest)]
    assert (tmp_path / "res" / "sub" / "greeting.txt").read_text() == "hello-result\n"
    table = hive(server, "results", task_id, "--dir", str(tmp_path / "again"))
    assert table.returncode == 0 and "sub/greeting.txt" in table.stdout, table.stderr
    assert containers_of(task_id) == []  # removed after the attempt


@docker_test
def test_results_of_unknown_task_and_of_task_without_files(docker_cluster: tuple[Server, Proc]) -> None:
    server, _ = docker_cluster
    unknown = hive(server, "results", "no-such-task")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: ") and len(unknown.stderr.strip().splitlines()) == 1
    done = hive(server, "submit", "--wait", "--json", "--image", IMAGE, "--", "true")
    task_id = json.loads(done.stdout)["task_id"]
    empty = hive(server, "results", task_id)
    assert empty.returncode == 0
    assert "without result files" in empty.stderr


@docker_test
async def test_cancel_stops_and_removes_the_container(api: HiveClient) -> None:
    task_id = await api.submit(docker_spec("sleep", "300"))
    await wait_for(lambda: containers_of(task_id), "no container started")
    await api.cancel(task_id)
    assert (await api.wait(task_id, timeout=20))["state"] == "cancelled"
    await wait_for(lambda: not containers_of(task_id), "the container is still there", timeout=15)


@docker_test
async def test_container_over_its_memory_limit_is_oom_killed(api: HiveClient) -> None:
    # the shell keeps 200 MB of 'a's in a variable: far over a 0.05 GB (51 MiB) limit
    grow = 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived ${#x}'
    task_id = await api.submit(docker_spec("sh", "-c", grow, resources=Resources(memory_gb=0.05)))
    final = await api.wait(task_id, timeout=60)
    assert final["state"] == "failed", final
    assert final["reason"] == "oom"
    assert "OOM killed" in final["error"] and "51 MiB" in final["error"]
    assert "survived" not in (final.get("stdout") or "")


@docker_test
async def test_container_gets_env_limits_labels_and_no_network(api: HiveClient) -> None:
    script = (
        "echo $HIVE_TASK_ID $HIVE_WORKSPACE $GREETING; pwd; ls /sys/class/net; echo hive:progress 0.5 half; sleep 0.3"
    )
    seen: list[tuple[float, str]] = []
    task_id = await api.submit(docker_spec("sh", "-c", script, env={"GREETING": "hi"}, resources=Resources(cpu=0.5)))
    final = await api.wait(task_id, lambda f, m: seen.append((f, m)), timeout=30)
    assert final["state"] == "completed", final
    lines = final["stdout"].splitlines()
    assert lines[0] == f"{task_id} /workspace hi"
    assert lines[1] == "/workspace"
    assert lines[2:-1] == ["lo"]  # network "none": loopback only
    assert lines[-1] == "hive:progress 0.5 half"
    assert (0.5, "half") in seen


@docker_test
async def test_failing_command_reports_exit_code_and_stderr(api: HiveClient) -> None:
    task_id = await api.submit(docker_spec("sh", "-c", "echo nope >&2; exit 4"))
    final = await api.wait(task_id, timeout=30)
    assert final["state"] == "failed"
    assert (final["reason"], final["exit_code"]) == ("exit_code", 4)
    assert "exited with code 4: nope" in final["error"]


@docker_test
@pytest.mark.slow
async def test_restarted_node_removes_containers_a_crash_left(
    api: HiveClient, docker_cluster: tuple[Server, Proc]
) -> None:
    _, dock = docker_cluster
    task_id = await api.submit(docker_spec("sleep", "300"))
    await wait_for(lambda: containers_of(task_id), "no container started")
    dock.kill9()
    assert containers_of(task_id), "the container should outlive the killed node"
    dock.start()
    await wait_for(lambda: not containers_of(task_id), "the leftover container is still there", timeout=15)
    final = await api.wait(task_id, timeout=30)
    assert (final["state"], final["reason"]) == ("failed", "interrupted"), final


# -- without docker ---------------------------------------------------------------------


async def test_node_without_docker_never_gets_docker_tasks(client: HiveClient) -> None:
    nodes = await client.nodes()
    assert nodes and all("docker" not in n["executors"] for n in nodes)
    task_id = await client.submit(docker_spec("true"))
    try:
        await asyncio.sleep(1.5)
        task = await client.task(task_id)
        assert task["state"] == "queued", task
        assert task["attempt"] == 0
    finally:
        await client.cancel(task_id)  # the session cluster is shared: leave nothing queued
    assert (await client.wait(task_id, timeout=10))["state"] == "cancelled"


async def test_docker_disabled_by_env_is_not_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_ENABLED", "false")
    settings = NodeSettings.from_env(node_id="no-docker")
    assert settings.docker is False
    service = Node(target=None, settings=settings)  # type: ignore[arg-type]  # nothing connects here
    await service._add_docker()
    assert sorted(service.executors) == ["function", "process"]


def test_nodes_without_an_engine_say_so_once_and_do_not_offer_docker(
    fresh_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{fresh_server.directory}/no-docker.sock")
    procs = [coordinator(fresh_server).start(), node(fresh_server, "engineless", "--docker").start()]
    try:
        monkeypatch.setenv("DOCKER_ENABLED", "false")
        procs.append(node(fresh_server, "disabled").start())
        rows = registered(fresh_server, {"engineless", "disabled"})
        assert sorted(rows["engineless"]["executors"]) == ["function", "process"]
        assert sorted(rows["disabled"]["executors"]) == ["function", "process"]
        assert procs[1].text().count("docker is not available") == 1
        assert "docker is not available" not in procs[2].text()  # disabled is not missing
    finally:
        for proc in reversed(procs):
            proc.stop()


def registered(server: Server, wanted: set[str], timeout: float = 15.0) -> dict[str, dict]:
    """The coordinator's view of the nodes, once it has seen all of ``wanted`` register."""
    deadline = time.monotonic() + timeout
    while True:
        listed = hive(server, "nodes", "--json")
        rows = {n["node_id"]: n for n in json.loads(listed.stdout)} if listed.returncode == 0 else {}
        if wanted <= rows.keys():
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"nodes {sorted(wanted - rows.keys())} not registered: {listed.stderr}")
        time.sleep(0.2)


async def test_process_task_results_skip_links(client: HiveClient, nats_server: Server, tmp_path: Path) -> None:
    # result files are not docker's alone; a link could point anywhere on the node, so it is not stored
    script = 'mkdir -p "$HIVE_WORKSPACE/out" && printf abc > "$HIVE_WORKSPACE/out/a.txt" && ln -s /etc/passwd "$HIVE_WORKSPACE/out/link"'
    task_id = await client.submit(TaskSpec(command=["sh", "-c", script]))
    final = await client.wait(task_id, timeout=30)
    assert final["state"] == "completed", final
    assert final["outputs"] == [{"name": "a.txt", "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}]
    fetched = hive(nats_server, "results", task_id, "--dir", str(tmp_path))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "a.txt").read_bytes() == b"abc"
    assert not (tmp_path / "link").exists()
