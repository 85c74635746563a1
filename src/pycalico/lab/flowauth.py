"""The lab's flow API credentials: one CA, one server certificate, one client certificate
and one token per lab, so every node's flow API is HTTPS on all its addresses and only the
lab's clients can read it (:mod:`pycalico.flows.auth` has the rules).

Files in ``<lab dir>/flows-api/`` (keys and the token mode 0600): ``ca.pem``/``ca.key``,
``server.pem``/``server.key`` (subject alternative names: 127.0.0.1, ::1, localhost and every
node's address), ``client.pem``/``client.key``, ``token``. :func:`felix_settings` is what the
lab puts in FelixConfiguration ``default``; ``calicoctl flows`` run on a node finds the token
and CA there, ``calico-lab flows`` presents the client certificate.

Invariant: created once at ``up`` (:func:`ensure`) and reused; nothing here talks to a node.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pycalico.flows.auth import ClientCredentials, ensure_token

_VALID = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class LabFlowFiles:
    directory: Path

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def client(self) -> ClientCredentials:
        """calico-lab's credentials (client certificate, CA; no token)."""
        return ClientCredentials.load(
            ca_file=self.path("ca.pem"),
            cert_file=self.path("client.pem"),
            key_file=self.path("client.key"),
        )


def files(lab_dir: Path) -> LabFlowFiles:
    return LabFlowFiles(lab_dir / "flows-api")


def felix_settings(f: LabFlowFiles) -> dict[str, str]:
    """FelixConfiguration ``default`` fields: HTTPS on every address, mutual TLS or token."""
    return {
        "flowLogsAPIHost": "0.0.0.0",
        "flowLogsAPITokenFile": f.path("token"),
        "flowLogsAPICertFile": f.path("server.pem"),
        "flowLogsAPIKeyFile": f.path("server.key"),
        "flowLogsAPICAFile": f.path("ca.pem"),
    }


def _write(path: Path, data: bytes, private: bool) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    usage: Sequence[x509.ObjectIdentifier] = (),
    sans: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
    )
    if issuer is None:
        usage_ext = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        b = b.add_extension(usage_ext, True)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage(list(usage)), False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), False)
    return b.sign(issuer_key, hashes.SHA256())


def generate(directory: Path, addresses: Sequence[str]) -> None:
    """A new CA, server certificate for ``addresses`` (plus loopback), client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca_key = _key()
    ca = _cert("calico-lab flows CA", ca_key, None, ca_key)
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for a in ("127.0.0.1", "::1", *addresses):
        ip = x509.IPAddress(ipaddress.ip_address(a.split("/")[0]))
        if ip not in sans:
            sans.append(ip)
    pem = serialization.Encoding.PEM
    for name, cn, usage, alt in (
        ("server", "calico-node flow API", [ExtendedKeyUsageOID.SERVER_AUTH], sans),
        ("client", "calico-lab", [ExtendedKeyUsageOID.CLIENT_AUTH], []),
    ):
        key = _key()
        cert = _cert(cn, key, ca.subject, ca_key, usage, alt)
        _write(directory / f"{name}.key", _key_pem(key), True)
        _write(directory / f"{name}.pem", cert.public_bytes(pem), False)
    _write(directory / "ca.key", _key_pem(ca_key), True)
    _write(directory / "ca.pem", ca.public_bytes(pem), False)


def ensure(lab_dir: Path, addresses: Sequence[str]) -> LabFlowFiles:
    """The lab's files, generated when missing."""
    f = files(lab_dir)
    if not all((f.directory / n).exists() for n in ("ca.pem", "server.pem", "client.pem")):
        generate(f.directory, addresses)
    ensure_token(f.path("token"))
    return f
