"""Who may read a node's flow API: a bearer token and/or a TLS client certificate.

Flow records say who talks to whom; the API (:mod:`pycalico.flows.api`) answers only
authenticated requests. Owns the server's policy (:class:`ServerAuth`, built from the Felix
settings by :func:`server_auth`), the client's credentials (:class:`ClientCredentials`) and
the token file rules.

- **Token**: ``flowLogsAPITokenFile`` (default ``<flowLogsFileDirectory>/api.token``). The
  node creates it (random, mode 0600) when it is missing; a client sends it as
  ``Authorization: Bearer <token>``. A token file that is readable by group or others, or
  empty, is refused on both sides (the server then accepts no token: fail closed).
- **TLS**: ``flowLogsAPICertFile`` + ``flowLogsAPIKeyFile`` make the API HTTPS;
  ``flowLogsAPICAFile`` in addition accepts client certificates signed by that CA as
  credentials (mutual TLS; a certificate the CA did not sign fails the handshake).
- **Bind**: ``flowLogsAPIHost`` (default ``127.0.0.1``). A non-loopback address without TLS
  would send the token in clear text: the API then binds ``127.0.0.1`` and says why
  (:func:`bind_host`).

Invariants: a request is authorised only by a token equal to the node's (constant-time
compare) or by a verified client certificate; anything else is a 401, never a partial answer.
"""

from __future__ import annotations

import hmac
import os
import secrets
import ssl
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycalico.errors import CalicoError
from pycalico.system.listen import is_loopback

TOKEN_FILE_NAME = "api.token"


class FlowAuthError(CalicoError):
    """A credential file is missing, unreadable, too open or malformed (names it)."""


def default_token_file(flow_logs_dir: str) -> str:
    return str(Path(flow_logs_dir) / TOKEN_FILE_NAME)


def token_file(cfg: Any) -> str:
    """The token file a node with Felix settings ``cfg`` uses."""
    return str(cfg.flow_logs_api_token_file or default_token_file(cfg.flow_logs_file_directory))


def read_token(path: str) -> str:
    """The token in ``path``; FlowAuthError when it is missing, readable by group/others
    (like ssh's private keys) or empty."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise FlowAuthError(f"flow API token file {path}: {e.strerror}") from None
    with os.fdopen(fd) as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise FlowAuthError(f"flow API token file {path}: not a regular file")
        if mode & 0o077:
            raise FlowAuthError(
                f"flow API token file {path}: mode {stat.S_IMODE(mode):04o} is readable by "
                "group or others (must be 0600 or stricter)"
            )
        token = f.read().strip()
    if not token or any(c.isspace() for c in token):
        raise FlowAuthError(f"flow API token file {path}: empty or contains white space")
    return token


def ensure_token(path: str) -> str:
    """The token in ``path``, created (32 random bytes, URL-safe, mode 0600) when missing."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        for _ in range(20):  # another process may have created it and not written it yet
            try:
                return read_token(path)
            except FlowAuthError:
                try:
                    empty = os.path.getsize(path) == 0
                except OSError:
                    empty = False
                if not empty:
                    raise
                time.sleep(0.05)
        return read_token(path)
    except OSError as e:
        raise FlowAuthError(f"flow API token file {path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return read_token(path)


def bind_host(host: str, tls: bool) -> tuple[str, str]:
    """(address to bind, warning or ""): a non-loopback address needs TLS."""
    host = host or "127.0.0.1"
    if is_loopback(host) or tls:
        return host, ""
    return "127.0.0.1", (
        f"flowLogsAPIHost {host} is not a loopback address and flowLogsAPICertFile/"
        "flowLogsAPIKeyFile are not set (the token would cross the network in clear "
        "text): the flow API listens on 127.0.0.1 only"
    )


def _check_files(**files: str) -> None:
    for setting, path in files.items():
        if path and not os.access(path, os.R_OK):
            raise FlowAuthError(f"{setting} {path}: not readable")


def server_tls_context(cert: str, key: str, ca: str = "") -> ssl.SSLContext:
    """HTTPS with ``cert``/``key``; with ``ca`` client certificates signed by it are
    verified (and accepted as credentials); none is required (a token also works)."""
    _check_files(flowLogsAPICertFile=cert, flowLogsAPIKeyFile=key, flowLogsAPICAFile=ca)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if ca:
            ctx.load_verify_locations(cafile=ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL
    except (ssl.SSLError, OSError) as e:
        raise FlowAuthError(f"flow API TLS ({cert}, {key}, {ca or 'no CA'}): {e}") from None
    return ctx


@dataclass
class ServerAuth:
    """What the API accepts: ``token`` (None: no token works) and/or a verified client
    certificate (``client_certs``: a CA is configured); ``tls``: the server context."""

    token: str | None = None
    tls: ssl.SSLContext | None = None
    client_certs: bool = False

    def allows(self, authorization: str | None, peer_cert: Any) -> bool:
        if self.client_certs and peer_cert:
            return True  # the handshake verified it against flowLogsAPICAFile
        if self.token is None or not authorization:
            return False
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    def describe(self) -> str:
        ways = (["token"] if self.token else []) + (["client cert"] if self.client_certs else [])
        return " or ".join(ways) or "nothing (no usable credentials configured)"


def server_auth(cfg: Any) -> tuple[ServerAuth, list[str]]:
    """The API's policy from Felix settings ``cfg`` and the problems found (each logged by
    the caller). A problem never opens the API: a bad token file leaves only client
    certificates; bad TLS files leave only the token on loopback."""
    problems: list[str] = []
    auth = ServerAuth()
    try:
        auth.token = ensure_token(token_file(cfg))
    except FlowAuthError as e:
        problems.append(str(e))
    cert, key, ca = (
        cfg.flow_logs_api_cert_file,
        cfg.flow_logs_api_key_file,
        cfg.flow_logs_api_ca_file,
    )
    if bool(cert) != bool(key):
        problems.append("flowLogsAPICertFile and flowLogsAPIKeyFile must be set together")
    elif cert:
        try:
            auth.tls = server_tls_context(cert, key, ca)
            auth.client_certs = bool(ca)
        except FlowAuthError as e:
            problems.append(str(e))
    elif ca:
        problems.append("flowLogsAPICAFile needs flowLogsAPICertFile and flowLogsAPIKeyFile")
    return auth, problems


@dataclass(frozen=True)
class ClientCredentials:
    """What a client presents: a token (``Authorization: Bearer``) and/or a client
    certificate; ``ca_file`` verifies an HTTPS node (system CAs when empty)."""

    token: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @classmethod
    def load(
        cls, token_file: str = "", ca_file: str = "", cert_file: str = "", key_file: str = ""
    ) -> ClientCredentials:
        """Read ``token_file`` (FlowAuthError when unusable) and check the TLS files."""
        if bool(cert_file) != bool(key_file):
            raise FlowAuthError("a client certificate needs both --cert-file and --key-file")
        _check_files(**{"--ca-file": ca_file, "--cert-file": cert_file, "--key-file": key_file})
        return cls(read_token(token_file) if token_file else "", ca_file, cert_file, key_file)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except (ssl.SSLError, OSError) as e:
                raise FlowAuthError(f"client certificate {self.cert_file}: {e}") from None
        return ctx
