"""Flow API credentials (pycalico.flows.auth): token files (created 0600, refused when too
open), the safe bind address, the policy built from Felix settings (fail closed), mutual TLS
with certificates from the lab's generator, and ``calicoctl flows`` credentials."""

from __future__ import annotations

import os
import socket
import ssl
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pycalico.ctl.main import cli
from pycalico.flows.api import FlowAPI, FlowAPIError, fetch_flows
from pycalico.flows.auth import (
    ClientCredentials,
    FlowAuthError,
    ServerAuth,
    bind_host,
    ensure_token,
    read_token,
    server_auth,
    server_tls_context,
)
from pycalico.flows.store import FlowFilter
from pycalico.lab.flowauth import generate
from pycalico.model.felixconfig import FelixConfig
from tests.unit.test_flows_api import FakeCollector


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_token_file_is_created_0600_and_refused_when_readable_by_others(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "api.token")
    token = ensure_token(path)
    assert len(token) >= 40 and os.stat(path).st_mode & 0o777 == 0o600
    assert ensure_token(path) == token == read_token(path)  # kept, not regenerated
    os.chmod(path, 0o644)
    with pytest.raises(FlowAuthError, match=r"mode 0644 is readable by group or others"):
        read_token(path)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(FlowAuthError, match="empty"):
        read_token(str(empty))
    with pytest.raises(FlowAuthError, match="No such file"):
        read_token(str(tmp_path / "missing"))


def test_non_loopback_bind_needs_tls() -> None:
    assert bind_host("127.0.0.1", False) == ("127.0.0.1", "")
    assert bind_host("::1", False) == ("::1", "")
    assert bind_host("0.0.0.0", True) == ("0.0.0.0", "")
    host, why = bind_host("0.0.0.0", False)
    assert host == "127.0.0.1" and "flowLogsAPIHost 0.0.0.0 is not a loopback" in why
    assert FelixConfig().flow_logs_api_host == "127.0.0.1"  # the default is safe


def test_server_auth_from_settings_fails_closed(tmp_path: Path) -> None:
    cfg = replace(FelixConfig(), flow_logs_file_directory=str(tmp_path))
    auth, problems = server_auth(cfg)
    assert problems == [] and auth.token == read_token(str(tmp_path / "api.token"))
    assert auth.tls is None and not auth.client_certs
    os.chmod(tmp_path / "api.token", 0o640)  # too open: no token works any more
    auth, problems = server_auth(cfg)
    assert auth.token is None and "0640" in problems[0]
    assert not auth.allows(f"Bearer {read_token.__name__}", None)
    half = replace(cfg, flow_logs_api_cert_file=str(tmp_path / "x.pem"))
    assert "must be set together" in server_auth(half)[1][-1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> dict[str, Path]:
    good, other = tmp_path_factory.mktemp("pki"), tmp_path_factory.mktemp("pki-other")
    generate(good, ["192.0.2.10"])
    generate(other, [])
    return {"good": good, "other": other}


def test_mutual_tls_accepts_the_cas_client_certificate_or_the_token(
    pki: dict[str, Path],
) -> None:
    d, o = pki["good"], pki["other"]
    ctx = server_tls_context(str(d / "server.pem"), str(d / "server.key"), str(d / "ca.pem"))
    api, port = FlowAPI(FakeCollector(), ServerAuth("tok", ctx, client_certs=True)), _port()
    api.serve("127.0.0.1", port)
    url, ca = f"https://127.0.0.1:{port}", str(d / "ca.pem")
    try:
        cert = ClientCredentials(ca_file=ca, cert_file=str(d / "client.pem"),
                                 key_file=str(d / "client.key"))  # fmt: skip
        assert fetch_flows(url, FlowFilter(), creds=cert)[0] == "node1"
        assert fetch_flows(url, FlowFilter(), creds=ClientCredentials("tok", ca))[0] == "node1"
        with pytest.raises(FlowAPIError, match="401"):  # TLS alone is no credential
            fetch_flows(url, FlowFilter(), creds=ClientCredentials(ca_file=ca))
        foreign = ClientCredentials("tok", ca, str(o / "client.pem"), str(o / "client.key"))
        with pytest.raises(FlowAPIError):  # a certificate of another CA: handshake refused
            fetch_flows(url, FlowFilter(), creds=foreign)
        with pytest.raises(FlowAPIError, match="CERTIFICATE_VERIFY_FAILED"):  # wrong server CA
            fetch_flows(url, FlowFilter(), creds=ClientCredentials("tok", str(o / "ca.pem")))
        with pytest.raises(FlowAPIError):  # plain HTTP to the HTTPS API gets nothing
            fetch_flows(f"http://127.0.0.1:{port}", FlowFilter(), timeout=2,
                        creds=ClientCredentials("tok"))  # fmt: skip
        # a client that never finishes its handshake does not block the others
        with socket.create_connection(("127.0.0.1", port)):
            assert fetch_flows(url, FlowFilter(), creds=cert)[0] == "node1"
    finally:
        api.stop()
    assert isinstance(ctx, ssl.SSLContext)


def test_calicoctl_flows_sends_the_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token = ensure_token(str(token_file))
    api, port = FlowAPI(FakeCollector(), ServerAuth(token=token)), _port()
    api.serve("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}"
    runner = CliRunner()
    try:
        ok = runner.invoke(cli, ["flows", "--endpoint", url, "--token-file", str(token_file),
                                 "--since", "500000h", "-o", "json"])  # fmt: skip
        assert ok.exit_code == 0, ok.output
        assert '"flows"' in ok.output and '"node1"' in ok.output
        env = {"CALICO_FLOWS_TOKEN_FILE": str(token_file)}
        assert runner.invoke(cli, ["flows", "--endpoint", url], env=env).exit_code == 0
        none = runner.invoke(cli, ["flows", "--endpoint", url, "--token-file", ""])
        assert none.exit_code == 1 and "401 authentication required" in none.output
        token_file.chmod(0o644)
        loose = runner.invoke(cli, ["flows", "--endpoint", url, "--token-file", str(token_file)])
        assert loose.exit_code == 1 and "readable by group or others" in loose.output
    finally:
        api.stop()
