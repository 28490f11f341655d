"""The local CA and server certificate of ``edge.auth.tls``: made once, loaded after,
reissued when a name is missing; the server certificate verifies against the CA, both by
cryptography's path validation and in a real TLS handshake with ``client_context``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from edge.auth.tls import TlsFiles, check_ca, client_context, ensure_local_ca, server_tls_config


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def fingerprint(path: Path) -> str:
    return cert(path).fingerprint(hashes.SHA256()).hex()


def sans(path: Path) -> tuple[set[str], set[str]]:
    san = cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), {str(i) for i in san.get_values_for_type(x509.IPAddress)}


def handshake(files: TlsFiles, context: ssl.SSLContext, server_hostname: str) -> str:
    """A TLS handshake in memory between a server with ``files`` and a client with
    ``context``; the TLS version agreed, or the client's ssl error."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(files.cert, files.key)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = context.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    done: set[int] = set()
    for _ in range(10):
        for side, obj in enumerate((client, server)):
            if side not in done:
                try:
                    obj.do_handshake()
                    done.add(side)
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == {0, 1}:
            return str(client.version())
    raise AssertionError("handshake did not finish")


def test_created_once_then_loaded(tmp_path: Path) -> None:
    files = ensure_local_ca(tmp_path / "tls")
    assert files == TlsFiles(
        tmp_path / "tls" / "ca.pem", tmp_path / "tls" / "server.pem", tmp_path / "tls" / "server-key.pem"
    )
    before = {p: p.read_bytes() for p in (files.ca, files.cert, files.key, tmp_path / "tls" / "ca-key.pem")}
    again = ensure_local_ca(tmp_path / "tls")
    assert again == files
    assert {p: p.read_bytes() for p in before} == before  # nothing rewritten

    ca, server = cert(files.ca), cert(files.cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert sans(files.cert) == ({"localhost"}, {"127.0.0.1", "::1"})
    assert server.issuer == ca.subject
    years = lambda c: (c.not_valid_after_utc - c.not_valid_before_utc) / dt.timedelta(days=365)  # noqa: E731
    assert 9.9 < years(ca) < 10.1
    assert 1.9 < years(server) < 2.1


def test_new_name_reissues_the_server_certificate_only(tmp_path: Path) -> None:
    files = ensure_local_ca(tmp_path)
    ca, first = fingerprint(files.ca), fingerprint(files.cert)
    key = files.key.read_bytes()

    ensure_local_ca(tmp_path, ["hive.example.org", "10.1.2.3"])
    assert fingerprint(files.ca) == ca
    assert fingerprint(files.cert) != first
    assert files.key.read_bytes() != key  # a new key with the new certificate
    assert sans(files.cert) == ({"localhost", "hive.example.org"}, {"127.0.0.1", "::1", "10.1.2.3"})

    second = fingerprint(files.cert)
    ensure_local_ca(tmp_path, ["HIVE.example.org."])  # already covered (case, trailing dot)
    ensure_local_ca(tmp_path)  # fewer names: the ones it had are kept
    assert fingerprint(files.cert) == second

    ensure_local_ca(tmp_path, ["[fd00::7]"])
    assert sans(files.cert) == ({"localhost", "hive.example.org"}, {"127.0.0.1", "::1", "10.1.2.3", "fd00::7"})


def test_damaged_or_foreign_server_certificate_is_reissued(tmp_path: Path) -> None:
    files = ensure_local_ca(tmp_path / "a")
    ca = fingerprint(files.ca)
    files.cert.write_text("garbage\n")
    ensure_local_ca(tmp_path / "a")
    assert handshake(files, client_context(files.ca), "localhost")

    other = ensure_local_ca(tmp_path / "b")
    files.cert.write_bytes(other.cert.read_bytes())  # signed by another CA
    files.key.write_bytes(other.key.read_bytes())
    ensure_local_ca(tmp_path / "a")
    assert fingerprint(files.ca) == ca
    assert cert(files.cert).issuer == cert(files.ca).subject
    assert fingerprint(files.cert) != fingerprint(other.cert)

    files.key.write_bytes(other.key.read_bytes())  # a key that is not the certificate's
    ensure_local_ca(tmp_path / "a")
    assert handshake(files, client_context(files.ca), "localhost")


def test_missing_ca_key_is_an_error_not_a_new_ca(tmp_path: Path) -> None:
    ensure_local_ca(tmp_path)
    (tmp_path / "ca-key.pem").unlink()
    with pytest.raises(ValueError, match=r"ca-key\.pem is missing: restore it"):
        ensure_local_ca(tmp_path)


def test_bad_names_are_refused(tmp_path: Path) -> None:
    for bad in ("tls://host:4222", "two words", ""):
        with pytest.raises(ValueError, match="not a host name or IP address"):
            ensure_local_ca(tmp_path, [bad])


def test_server_certificate_verifies_against_the_ca(tmp_path: Path) -> None:
    files = ensure_local_ca(tmp_path / "tls", ["hive.example.org"])
    other = ensure_local_ca(tmp_path / "other")
    peer = cert(files.cert)
    for subject in (
        x509.DNSName("localhost"),
        x509.DNSName("hive.example.org"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ):
        verifier = PolicyBuilder().store(Store([cert(files.ca)])).build_server_verifier(subject)
        chain = verifier.verify(peer, [])
        assert chain[-1] == cert(files.ca)
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([cert(other.ca)])).build_server_verifier(x509.DNSName("localhost")).verify(peer, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([cert(files.ca)])).build_server_verifier(x509.DNSName("elsewhere")).verify(peer, [])


def test_handshake_with_client_context(tmp_path: Path) -> None:
    files = ensure_local_ca(tmp_path / "tls")
    other = ensure_local_ca(tmp_path / "other")
    context = client_context(files.ca)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    for name in ("localhost", "127.0.0.1", "::1"):
        assert handshake(files, context, name) in {"TLSv1.2", "TLSv1.3"}
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        handshake(files, client_context(other.ca), "localhost")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(files, context, "example.com")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(files, client_context(None), "localhost")  # the system store knows no local CA


def test_key_files_are_private(tmp_path: Path) -> None:
    files = ensure_local_ca(tmp_path / "tls")
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "tls") == 0o700
    assert mode(files.key) == 0o600
    assert mode(tmp_path / "tls" / "ca-key.pem") == 0o600
    ensure_local_ca(tmp_path / "tls", ["10.9.9.9"])  # a reissued key too
    assert mode(files.key) == 0o600
    assert not list((tmp_path / "tls").glob(".*.tmp"))


def test_check_ca(tmp_path: Path) -> None:
    files = ensure_local_ca(tmp_path / "tls")
    assert check_ca(files.ca) == [cert(files.ca)]
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cases = {
        tmp_path / "missing.pem": "No such file or directory",
        tmp_path / "junk.pem": "is not a PEM certificate",
        files.key: "is not a PEM certificate",  # a PEM file, but a key
    }
    for path, message in cases.items():
        with pytest.raises(ValueError, match=message) as info:
            check_ca(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
        with pytest.raises(ValueError, match=message):
            client_context(path)


def test_server_tls_config(tmp_path: Path) -> None:
    files = ensure_local_ca(tmp_path / "tls")
    block = server_tls_config(files)
    assert block == (
        f'tls {{\n  cert_file: "{files.cert.resolve()}"\n  key_file: "{files.key.resolve()}"\n  timeout: 2\n}}\n'
    )
    assert "verify" not in block and "ca_file" not in block
    assert "timeout: 0.5" in server_tls_config(files, timeout=0.5)
