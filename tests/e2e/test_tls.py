"""Operator mode over TLS against a real nats-server: the config is the JetStream store,
the port, the operator-mode snippet (``edge.auth.server_config``) and the ``tls`` block
(``edge.auth.tls``); a coordinator does a JetStream round trip over ``tls://``, and every
wrong client fails fast with one error line.

What nats-py 2.16 raises (and passes to error_cb) in each bad case:

- a server that requires TLS is never spoken to in plain text by nats-py: it reads
  ``tls_required`` in INFO and upgrades whatever the URL scheme, with ``ssl.create_default_
  context()`` (the system store) when no ``tls=`` is given; against the local CA that is
  ``ssl.SSLCertVerificationError`` "... certificate verify failed: unable to get local
  issuer certificate ...". A client that really sends plain text (CONNECT without a
  handshake) gets the connection closed, with no -ERR.
- another CA: the same ``ssl.SSLCertVerificationError``; a name the certificate lacks:
  "... Hostname mismatch, certificate is not valid for '<name>' ...".
- revoked, spliced or foreign-operator creds over a good TLS connection: a plain
  ``nats.errors.Error``, str ``"nats: 'Authorization Violation'"`` (not the
  AuthorizationError subclass). A foreign operator's account is unknown to the server,
  which tries to fetch it first: the error comes after ~1.9 s (its account fetch timeout).

Bounded with ``allow_reconnect=False``: with reconnects allowed, ``max_reconnect_attempts=0``
does not stop nats.connect from retrying the first server forever.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest

import edge.auth as auth
from edge.auth.jwt import creds_file, read_creds
from edge.auth.tls import TlsFiles, client_context, ensure_local_ca, server_tls_config
from hive.children import tied_to_parent
from hive.server import free_port, port_open, server_binary

STREAM = "TLSRT"
AUTH_VIOLATION = "nats: 'Authorization Violation'"
UNKNOWN_CA = "certificate verify failed: unable to get local issuer certificate"


@dataclass
class TlsServer:
    directory: Path
    port: int
    tls: TlsFiles
    other_ca: Path
    creds: dict[str, Path]
    proc: subprocess.Popen[bytes]

    def url(self, scheme: str = "tls", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    directory = tmp_path_factory.mktemp("tls")
    store = directory / "auth"
    creds = {
        "coord": auth.issue_user(store, "coordinator", "coord"),
        "gone": auth.issue_user(store, "node", "gone"),
        "foreign": auth.issue_user(directory / "elsewhere", "coordinator", "coord"),
    }
    auth.revoke_user(store, "gone")  # before the start: the preloaded account carries it
    # the coordinator's JWT with another user's seed: the nonce signature does not match
    spliced = directory / "spliced.creds"
    spliced.write_text(creds_file(read_creds(creds["coord"]).jwt, read_creds(creds["gone"]).seed))
    creds["spliced"] = spliced

    tls = ensure_local_ca(directory / "tls")
    other = ensure_local_ca(directory / "other-tls")
    port = free_port()
    conf = directory / "nats.conf"
    conf.write_text(
        f"port: {port}\nhost: 127.0.0.1\nserver_name: tls\n"
        f"jetstream {{ store_dir: {json.dumps(str(directory / 'jetstream'))} }}\n"
        + auth.server_config(store, directory / "resolver")
        + server_tls_config(tls)
    )
    log = directory / "nats-server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [server_binary(), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT, preexec_fn=tied_to_parent()
        )
    deadline = time.monotonic() + 10
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"nats-server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    yield TlsServer(directory, port, tls, other.ca, creds, proc)
    proc.terminate()
    proc.wait(10)


async def refused(url: str, creds: Path, connect_timeout: float = 2, **options: Any) -> tuple[BaseException, float]:
    """The exception nats.connect raises, how long it took; error_cb saw the same."""
    seen: list[BaseException] = []

    async def on_error(exc: Exception) -> None:
        seen.append(exc)

    start = time.perf_counter()
    with pytest.raises((OSError, nats.errors.Error)) as info:
        nc = await asyncio.wait_for(
            nats.connect(
                url,
                user_credentials=str(creds),
                error_cb=on_error,
                allow_reconnect=False,
                connect_timeout=connect_timeout,
                **options,
            ),
            connect_timeout + 5,
        )
        await nc.close()
    took = time.perf_counter() - start
    assert seen and seen[0] is info.value, seen
    assert "\n" not in str(info.value)
    return info.value, took


async def test_jetstream_round_trip_over_tls(server: TlsServer) -> None:
    context = client_context(server.tls.ca)
    for url in (server.url(), server.url(host="localhost")):  # IP and DNS SANs; no tls_hostname
        nc = await nats.connect(
            url, user_credentials=str(server.creds["coord"]), tls=context, allow_reconnect=False, connect_timeout=2
        )
        try:
            js = nc.jetstream(timeout=5)
            await js.add_stream(name=STREAM, subjects=["hive.tls.>"])
            ack = await js.publish("hive.tls.hello", b"over tls")
            assert ack.stream == STREAM
            msg = await js.get_msg(STREAM, ack.seq)
            assert (msg.subject, msg.data) == ("hive.tls.hello", b"over tls")
        finally:
            await nc.close()


async def test_plain_text_is_refused(server: TlsServer) -> None:
    # a client that never starts TLS: the INFO says TLS is required, CONNECT ends the connection
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        info = json.loads((await asyncio.wait_for(reader.readline(), 2)).split(b" ", 1)[1])
        assert info["tls_required"] is True
        writer.write(b'CONNECT {"verbose":false}\r\nPING\r\n')
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed: no PONG, no -ERR
    finally:
        writer.close()

    # nats-py upgrades on its own (nats:// or tls:// alike), with the system store by default
    for url in (server.url("nats"), server.url()):
        exc, took = await refused(url, server.creds["coord"])
        assert isinstance(exc, ssl.SSLCertVerificationError), repr(exc)
        assert UNKNOWN_CA in str(exc)
        print(f"refused after {took:.2f}s")

    # ... so nats:// with the right context works too
    nc = await nats.connect(
        server.url("nats"),
        user_credentials=str(server.creds["coord"]),
        tls=client_context(server.tls.ca),
        allow_reconnect=False,
        connect_timeout=2,
    )
    await nc.close()


async def test_another_ca_or_name_is_refused(server: TlsServer) -> None:
    exc, took = await refused(server.url(), server.creds["coord"], tls=client_context(server.other_ca))
    assert isinstance(exc, ssl.SSLCertVerificationError), repr(exc)
    assert UNKNOWN_CA in str(exc)
    print(f"refused after {took:.2f}s")

    context = client_context(server.tls.ca)
    exc, took = await refused(server.url(), server.creds["coord"], tls=context, tls_hostname="hive.example.org")
    assert isinstance(exc, ssl.SSLCertVerificationError), repr(exc)
    assert "Hostname mismatch, certificate is not valid for 'hive.example.org'" in str(exc)
    print(f"refused after {took:.2f}s")


@pytest.mark.parametrize("name", ["gone", "spliced", "foreign"])
async def test_bad_creds_are_refused(server: TlsServer, name: str) -> None:
    exc, took = await refused(server.url(), server.creds[name], 4, tls=client_context(server.tls.ca))
    assert type(exc) is nats.errors.Error, repr(exc)
    assert str(exc) == AUTH_VIOLATION
    print(f"\n{name}: {type(exc).__name__}({str(exc)!r}) after {took:.2f}s")
