"""TLS for the client port: a local CA (``ca.pem``, ``ca-key.pem``; 10 years), the server
certificate it signs (``server.pem``, ``server-key.pem``; 2 years; keys 0600, directory 0700),
the nats-server ``tls`` block and the client's ``ssl.SSLContext``. Clients prove who they are
with their JWT (operator mode), not a certificate: TLS encrypts and authenticates the server."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import os
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
CA_DAYS, SERVER_DAYS = 3650, 730
RENEW_BEFORE = dt.timedelta(days=30)  # a server certificate this close to expiry is reissued
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_Key = ec.EllipticCurvePrivateKey
_Ext = tuple[x509.ExtensionType, bool]  # an extension, and whether it is critical
_Pair = tuple[x509.Certificate, _Key]
_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
_USAGES += ("key_cert_sign", "crl_sign", "encipher_only", "decipher_only")


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # what clients trust
    cert: Path  # the server's certificate
    key: Path  # and its private key


def ensure_local_ca(directory: str | Path, names: Iterable[str] = ()) -> TlsFiles:
    """Create the CA and the server certificate in ``directory``, or load them. The server
    certificate covers localhost, 127.0.0.1, ::1 and ``names`` (host names or IPs); it is
    reissued, keeping its names, if it lacks one, is unreadable, not by this CA or expiring."""
    root = Path(directory)
    dns, ips = _split([*DEFAULT_NAMES, *names])
    files = TlsFiles(root / "ca.pem", root / "server.pem", root / "server-key.pem")
    with _locked(root):
        ca = _ensure_ca(root)
        current = _current(files, ca[0])
        have_dns, have_ips = _sans(current) if current is not None else (set(), set())
        fresh = current is not None and current.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE
        if not (fresh and dns <= have_dns and ips <= have_ips):
            _issue_server(files, ca, dns | have_dns, ips | have_ips)
    return files


def server_tls_config(files: TlsFiles, timeout: float = 2.0) -> str:
    """The nats-server ``tls`` block for the client port. No ``ca_file``/``verify`` (client
    certificates; ``verify`` defaults to false); ``min_version`` defaults to 1.2."""
    cert, key = json.dumps(str(files.cert.resolve())), json.dumps(str(files.key.resolve()))
    return f"tls {{\n  cert_file: {cert}\n  key_file: {key}\n  timeout: {timeout:g}\n}}\n"


def client_context(ca: str | Path | None = None) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca`` (a PEM file of one or
    more certificates) or, when None, the system's trust store; TLS 1.2 or later, with
    the host name (or IP address) checked against the certificate."""
    if ca is not None:
        check_ca(ca)
    # a default context requires a verified certificate and checks the host name
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=None if ca is None else str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def check_ca(path: str | Path) -> list[x509.Certificate]:
    """The certificates in the PEM file ``path``; a one-line ValueError if it has none."""
    file = Path(path)
    try:
        return x509.load_pem_x509_certificates(file.read_bytes())
    except OSError as exc:
        raise ValueError(f"CA file {file}: {exc.strerror or exc}") from None
    except ValueError:
        raise ValueError(f"CA file {file} is not a PEM certificate") from None


def _ensure_ca(root: Path) -> _Pair:
    cert_path, key_path = root / "ca.pem", root / "ca-key.pem"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: not an EC private key")
        return check_ca(cert_path)[0], key
    if cert_path.exists() or key_path.exists():
        missing = key_path if cert_path.exists() else cert_path
        raise ValueError(f"{missing} is missing: restore it, or remove {root} to make a new CA")
    key = ec.generate_private_key(ec.SECP256R1())
    constraints = x509.BasicConstraints(ca=True, path_length=0)
    cert = _issue("HiveMind local CA", key, CA_DAYS, [(constraints, True), (_usage("key_cert_sign", "crl_sign"), True)])
    _save(cert_path, key_path, cert, key)
    return cert, key


def _issue_server(files: TlsFiles, ca: _Pair, dns: set[str], ips: set[_IP]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    alt = [x509.DNSName(n) for n in sorted(dns)] + [x509.IPAddress(i) for i in sorted(ips, key=str)]
    ca_ski = ca[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    exts: list[_Ext] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_usage("digital_signature"), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.SubjectAlternativeName(alt), False),
        (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False),
    ]
    _save(files.cert, files.key, _issue("HiveMind nats-server", key, SERVER_DAYS, exts, ca), key)


def _issue(name: str, key: _Key, days: int, exts: Iterable[_Ext], ca: _Pair | None = None) -> x509.Certificate:
    """A certificate for ``key``, signed by ``ca`` (its certificate and key) or by itself."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder(subject_name=subject, issuer_name=subject if ca is None else ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # a little clock skew
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    for extension, critical in exts:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key if ca is None else ca[1], hashes.SHA256())


def _current(files: TlsFiles, ca: x509.Certificate) -> x509.Certificate | None:
    """The server certificate, if this CA signed it and its key is there and matches."""
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        cert.verify_directly_issued_by(ca)
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return None
    return cert if cert.public_key() == key.public_key() else None


def _sans(cert: x509.Certificate) -> tuple[set[str], set[_IP]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return {n.lower() for n in san.get_values_for_type(x509.DNSName)}, set(san.get_values_for_type(x509.IPAddress))


def _split(names: Iterable[str]) -> tuple[set[str], set[_IP]]:
    dns, ips = set[str](), set[_IP]()
    for name in (n.strip() for n in names):
        try:
            ips.add(ipaddress.ip_address(name.strip("[]")))
        except ValueError:
            if not name or any(c.isspace() or c in '/:"' for c in name):
                raise ValueError(f"not a host name or IP address: {name!r}") from None
            dns.add(name.lower().rstrip("."))
    return dns, ips


def _usage(*on: str) -> x509.KeyUsage:
    return x509.KeyUsage(**{u: u in on for u in _USAGES})


def _save(cert_path: Path, key_path: Path, cert: x509.Certificate, key: _Key) -> None:
    pkcs8, plain = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    _write(key_path, key.private_bytes(serialization.Encoding.PEM, pkcs8, plain), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically; a key is never readable by others, not even for an instant."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    with open(root / ".lock", "a") as lock:  # closing it releases the lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
