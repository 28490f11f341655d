"""The tests' port picker: a cluster's six ports, or two tests' servers, never share one."""

from __future__ import annotations

from hive.server import free_port


def test_free_port_never_gives_the_same_port_twice() -> None:
    ports = [free_port() for _ in range(500)]  # drawn without the rule, some would repeat
    assert len(set(ports)) == len(ports)
