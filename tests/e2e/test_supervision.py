"""Supervision in ``hive up``: restarts with backoff, drained nodes let go, crash loops
given up on. The decisions are unit-tested (pure ``decide``); the slow tests run the real
``hive up`` as a subprocess and kill its children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from hive.children import tied_to_parent
from hive.restarts import History, RestartPolicy, decide
from hive.server import free_port

# -- the pure decisions -------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    history, now, delays = History(), 1000.0, []
    for _ in range(8):
        decision = decide(-9, now - 15.0, now, history)  # up 15 s: not a crash at start
        assert decision.action == "restart"
        assert decision.at == now + decision.delay
        delays.append(decision.delay)
        history, now = decision.history, now + 20.0
    assert delays == [0.5, 1, 2, 4, 8, 10, 10, 10]


def test_backoff_resets_after_a_stable_run() -> None:
    history = History(restarts=5)
    assert decide(1, 0.0, 29.0, history).delay == 10.0
    stable = decide(1, 0.0, 30.0, history)
    assert stable.delay == 0.5
    assert decide(1, 100.0, 115.0, stable.history).delay == 1.0


def test_three_quick_crashes_give_up() -> None:
    history = History()
    actions = []
    for start in (0.0, 20.0, 40.0):
        decision = decide(1, start, start + 2.0, history)
        actions.append(decision.action)
        history = decision.history
    assert actions == ["restart", "restart", "give_up"]
    assert history.quick_exits == 3


def test_a_long_run_breaks_the_crash_streak() -> None:
    first = decide(1, 0.0, 1.0, History())
    second = decide(1, 2.0, 3.0, first.history)
    assert second.history.quick_exits == 2
    long = decide(1, 10.0, 25.0, second.history)  # up 15 s
    assert long.action == "restart" and long.history.quick_exits == 0
    assert decide(1, 30.0, 31.0, long.history).action == "restart"


def test_a_failed_start_counts_as_a_quick_crash() -> None:
    history = History(quick_exits=2)
    assert decide(None, 5.0, 5.0, history).action == "give_up"


def test_exit_zero_leaves_only_when_allowed() -> None:
    assert decide(0, 0.0, 100.0, History(), may_leave=True).action == "leave"
    assert decide(0, 0.0, 1.0, History(quick_exits=2), may_leave=True).action == "leave"
    assert decide(0, 0.0, 100.0, History()).action == "restart"  # a coordinator never leaves
    assert decide(3, 0.0, 100.0, History(), may_leave=True).action == "restart"


def test_policy_is_configurable() -> None:
    policy = RestartPolicy(first_delay=1.0, max_delay=3.0, crash_window=1.0, crash_limit=2)
    decision = decide(1, 0.0, 0.5, History(), policy=policy)
    assert (decision.action, decision.delay) == ("restart", 1.0)
    assert decide(1, 2.0, 2.5, decision.history, policy=policy).action == "give_up"
    assert decide(1, 0.0, 5.0, History(restarts=4), policy=policy).delay == 3.0


# -- the real hive up ---------------------------------------------------------------------


class HiveUp:
    """``hive up --nodes 1`` in its own session, its output in a file."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.out = data.parent / f"{data.name}-hive-up.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        for key in ("HIVE_SERVER", "HIVE_DATA", "HIVE_USER"):
            env.pop(key, None)
        return env

    def start(self) -> HiveUp:
        args = [sys.executable, "-m", "hive", "up", "--data", str(self.data), "--port", str(self.port), "--nodes", "1"]
        args += ["--web-port", str(free_port())]
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                args, env=self.env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=tied_to_parent(),  # a killed test run leaves no `hive up` behind
            )  # fmt: skip
        return self

    def text(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def wait_for(self, needle: str, timeout: float = 30.0, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if needle in text[after:]:
                return text
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"hive up exited with {self.proc.returncode} before {needle!r}:\n{text}")
            time.sleep(0.1)
        raise AssertionError(f"no {needle!r} within {timeout}s:\n{self.text()}")

    def up(self) -> HiveUp:
        self.start().wait_for("HiveMind is up", timeout=60)
        return self

    def child(self, word: str) -> psutil.Process:
        """The child whose program is ``word`` or with ``word`` as one argument (paths may
        hold the words too: the test's name is in the data directory)."""
        assert self.proc is not None
        for child in psutil.Process(self.proc.pid).children():
            try:
                cmdline = child.cmdline()
                if cmdline and (Path(cmdline[0]).name == word or word in cmdline[1:]):
                    return child
            except psutil.NoSuchProcess:
                continue
        raise AssertionError(f"no child of hive up with {word!r} in its command line")

    def hive(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hive", *args, "--data", str(self.data)],
            env=self.env(), capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def nodes_answer(self, timeout: float = 20.0) -> list[dict]:
        """``hive nodes --json`` succeeds (the coordinator answers) within ``timeout``."""
        deadline = time.monotonic() + timeout
        last: subprocess.CompletedProcess[str] | None = None
        while time.monotonic() < deadline:
            last = self.hive("nodes", "--json", timeout=15)
            if last.returncode == 0:
                return json.loads(last.stdout)
            time.sleep(0.3)
        assert last is not None
        raise AssertionError(f"hive nodes did not answer within {timeout}s: {last.stderr}\n{self.text()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left in its session (it would be a bug)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)


@pytest.fixture
def hive_up(tmp_path: Path) -> Iterator[HiveUp]:
    cluster = HiveUp(tmp_path / "data")
    try:
        yield cluster
    finally:
        children = []
        if cluster.proc is not None and cluster.proc.poll() is None:
            children = psutil.Process(cluster.proc.pid).children(recursive=True)
        cluster.stop()
        _, alive = psutil.wait_procs(children, timeout=10)
        for proc in alive:  # children live in sessions of their own: kill them by pid
            proc.kill()
        assert not alive, f"hive up left {alive} running"


def wait_restarted(cluster: HiveUp, name: str, old_pid: int, after: int, timeout: float = 30.0) -> float:
    """Seconds until hive up says it restarted ``name``; check the new process is another."""
    started = time.monotonic()
    text = cluster.wait_for(f"{name} restarted (pid ", timeout, after)
    elapsed = time.monotonic() - started
    new_pid = int(text[after:].split(f"{name} restarted (pid ", 1)[1].split(")", 1)[0])
    assert new_pid != old_pid
    assert psutil.pid_exists(new_pid)
    return elapsed


@pytest.mark.slow
def test_killed_coordinator_and_node_are_restarted(hive_up: HiveUp) -> None:
    hive_up.up()
    coordinator = hive_up.child("coordinator")
    mark = len(hive_up.text())
    coordinator.kill()
    text = hive_up.wait_for("coordinator exited with code -9; restarting in 0.5s", 10, mark)
    assert str(hive_up.data / "logs" / "coordinator.log") in text[mark:]
    elapsed = wait_restarted(hive_up, "coordinator", coordinator.pid, mark)
    hive_up.nodes_answer(20)
    print(f"coordinator restarted {elapsed:.2f}s after the kill")

    node = hive_up.child("node-1")
    mark = len(hive_up.text())
    node.kill()
    hive_up.wait_for("node-1 exited with code -9; restarting in 0.5s", 10, mark)
    elapsed = wait_restarted(hive_up, "node-1", node.pid, mark)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # it registers again
        nodes = {n["node_id"]: n for n in hive_up.nodes_answer(20)}
        if nodes.get("node-1", {}).get("state") == "active":
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"node-1 not active again: {nodes}")
    print(f"node-1 restarted {elapsed:.2f}s after the kill")
    assert hive_up.proc is not None and hive_up.proc.poll() is None


@pytest.mark.slow
def test_killed_nats_server_is_restarted(hive_up: HiveUp) -> None:
    hive_up.up()
    server = hive_up.child("nats-server")
    mark = len(hive_up.text())
    server.kill()
    hive_up.wait_for("nats-server exited with code -9; restarting in 0.5s", 10, mark)
    elapsed = wait_restarted(hive_up, "nats-server", server.pid, mark)
    started = time.monotonic()
    hive_up.nodes_answer(20)
    print(
        f"nats-server restarted {elapsed:.2f}s after the kill; coordinator answered {time.monotonic() - started:.2f}s later"
    )
    new_server = hive_up.child("nats-server")
    assert f"-p {hive_up.port} " in " ".join(new_server.cmdline()) + " "
    assert str(hive_up.data / "jetstream") in new_server.cmdline()
    assert "coordinator restarted" not in hive_up.text()  # the services reconnected by themselves


@pytest.mark.slow
def test_crash_loop_of_the_coordinator_stops_the_cluster(hive_up: HiveUp) -> None:
    hive_up.data.mkdir(parents=True)
    (hive_up.data / "coordinator.db").write_bytes(b"this is not a sqlite database\n" * 200)
    started = time.monotonic()
    hive_up.start()
    assert hive_up.proc is not None
    code = hive_up.proc.wait(60)
    elapsed = time.monotonic() - started
    text = hive_up.text()
    log = hive_up.data / "logs" / "coordinator.log"
    assert code == 1, text
    assert text.count("coordinator exited with code 1; restarting in") == 2, text
    assert "error: coordinator crashed 3 times within 10s of starting; giving up" in text
    assert str(log) in text.split("giving up", 1)[1].splitlines()[0]
    assert "Traceback" not in text and "│" not in text, text
    assert "HiveMind is up" not in text
    assert not (hive_up.data / "cluster.json").exists()
    # the coordinator really crashed at start each time, one JSON line per crash
    crashes = [json.loads(line) for line in log.read_text().splitlines() if '"service crashed"' in line]
    assert len(crashes) == 3
    assert {c["exception"][-1]["exc_type"] for c in crashes} == {"DatabaseError"}
    assert "│" not in log.read_text()
    print(f"hive up gave up and exited {elapsed:.2f}s after it started")


@pytest.mark.slow
def test_drained_node_is_not_restarted(hive_up: HiveUp) -> None:
    hive_up.up()
    node = hive_up.child("node-1")
    mark = len(hive_up.text())
    drained = hive_up.hive("drain", "node-1")
    assert drained.returncode == 0, drained.stderr
    hive_up.wait_for("node-1 left (drained)", 30, mark)
    node.wait(10)  # reaped by hive up, which saw code 0 ("left")
    assert not node.is_running()
    time.sleep(3)  # longer than the first backoffs
    text = hive_up.text()[mark:]
    assert "node-1 restarted" not in text and "restarting" not in text, text
    with pytest.raises(AssertionError):
        hive_up.child("node-1")
    hive_up.nodes_answer(20)  # the rest keeps running
    assert hive_up.proc is not None and hive_up.proc.poll() is None


@pytest.mark.slow
def test_sigkill_of_hive_up_takes_its_children_along(hive_up: HiveUp) -> None:
    """Its children run in sessions of their own, yet none may outlive a SIGKILLed hive up
    (they hold the ports, and nobody would supervise them)."""
    hive_up.up()
    assert hive_up.proc is not None
    children = psutil.Process(hive_up.proc.pid).children(recursive=True)
    assert any(c.name() == "nats-server" for c in children), children
    os.kill(hive_up.proc.pid, signal.SIGKILL)
    hive_up.proc.wait(10)
    gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, f"outlived hive up: {[p.cmdline()[:4] for p in alive]}"
    assert len(gone) == len(children)


@pytest.mark.slow
def test_a_second_signal_while_stopping_still_stops_everything(hive_up: HiveUp) -> None:
    hive_up.up()
    assert hive_up.proc is not None
    children = psutil.Process(hive_up.proc.pid).children(recursive=True)
    hive_up.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # hive up is stopping its children now
    hive_up.proc.send_signal(signal.SIGINT)
    hive_up.proc.wait(30)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {[p.cmdline()[:4] for p in alive]}"
    assert "stopped" in hive_up.text()
