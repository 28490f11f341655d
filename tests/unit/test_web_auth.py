"""Web login tokens: signed, expiring, tamper-evident; the role read from the key store."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from edge.auth import issue_user, revoke_user
from hive.web.auth import BadToken, load_secret, person, sign, verify


def test_a_token_round_trips_and_expires() -> None:
    secret = b"k" * 32
    token = sign(secret, "alice", ttl_s=60, now=1000.0)
    assert verify(secret, token, now=1059.0) == ("alice", 1060)
    with pytest.raises(BadToken, match="expired"):
        verify(secret, token, now=1060.0)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # the signature
        lambda t: "eyJuIjoib2xnYSIsImV4cCI6OTk5OTk5OTk5OX0" + t[t.index(".") :],  # another name, same signature
        lambda t: t.replace(".", ""),
        lambda t: t + ".x",
        lambda t: "",
        lambda t: "x" * 5000,
    ],
)
def test_a_tampered_token_is_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    secret = b"s" * 32
    with pytest.raises(BadToken):
        verify(secret, mangle(sign(secret, "alice", 60)))


def test_another_secret_is_refused() -> None:
    with pytest.raises(BadToken, match="not signed"):
        verify(b"a" * 32, sign(b"b" * 32, "alice", 60))


def test_the_secret_is_made_once_and_private(tmp_path: Path) -> None:
    first = load_secret(tmp_path)
    assert len(first) == 32 and load_secret(tmp_path) == first
    assert stat.S_IMODE(os.stat(tmp_path / "web.secret").st_mode) == 0o600


def test_the_role_comes_from_the_key_store_at_each_check(tmp_path: Path) -> None:
    issue_user(tmp_path, "auditor", "audrey")
    issue_user(tmp_path, "node", "n1")
    secret = load_secret(tmp_path)
    token = sign(secret, "audrey", 60)
    who = person(tmp_path, secret, token)
    assert (who.name, who.role, who.can_act, who.is_operator) == ("audrey", "auditor", False, False)
    with pytest.raises(BadToken, match="not a person"):
        person(tmp_path, secret, sign(secret, "n1", 60))
    with pytest.raises(BadToken, match="no person"):
        person(tmp_path, secret, sign(secret, "nobody", 60))
    revoke_user(tmp_path, "audrey")
    with pytest.raises(BadToken, match="revoked"):
        person(tmp_path, secret, token)


def test_hive_web_token_prints_a_login_url_for_a_person_only(tmp_path: Path) -> None:
    import subprocess
    import sys

    issue_user(tmp_path / "auth", "client", "alice")
    issue_user(tmp_path / "auth", "node", "n1")

    def token(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "hive", "web", "token", *args, "--data", str(tmp_path)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    done = token("alice", "--ttl", "2", "--url", "http://dash:9000")
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    assert url.startswith("http://dash:9000/?token=")
    name, exp = verify(load_secret(tmp_path / "auth"), url.split("token=", 1)[1])
    assert name == "alice" and 7000 < exp - time.time() <= 7200
    for args, words in ((["bob"], "no person"), (["n1"], "not a person"), (["alice", "--ttl", "0"], "--ttl")):
        done = token(*args)
        assert done.returncode == 2 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
