"""calicoctl command family: ``flows`` — query the flow logs of every node.

Owns the fan-out: each node serves its own records on its flow API
(:mod:`pycalico.flows.api`, ``http[s]://<node address>:<flowLogsAPIPort>``, https when
FelixConfiguration ``default`` sets ``flowLogsAPICertFile``); the addresses are the Node
resources' BGP IPv4 addresses (``--endpoint URL``, repeatable, overrides them). Records of
all nodes are merged by time and printed by :mod:`pycalico.flows.cli`.

Credentials (:mod:`pycalico.flows.auth`): ``--token-file`` (default: the
FelixConfiguration's ``flowLogsAPITokenFile``, else ``<flowLogsFileDirectory>/api.token``,
when that file exists) and/or ``--cert-file``/``--key-file``; ``--ca-file`` verifies HTTPS
nodes. Each also from ``CALICO_FLOWS_TOKEN_FILE`` etc.

Invariant: read-only; a node that cannot be queried is named on stderr and the others are
still shown; exit 1 only when no node answered (or for a bad option).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pycalico.ctl.common import config_option, run_reporting_errors
from pycalico.flows.api import DEFAULT_PORT, fetch_flows
from pycalico.flows.auth import ClientCredentials, FlowAuthError, default_token_file
from pycalico.flows.cli import FlowsError, filter_options, gather, make_filter, print_flows
from pycalico.flows.record import FlowRecord
from pycalico.flows.store import FlowFilter


def node_endpoints(config_file: str | None) -> tuple[list[str], str, str]:
    """(``http[s]://<ip>:<port>`` of every Node with a BGP IPv4 address, the token file and
    the CA file the FelixConfiguration ``default`` names)."""
    from pycalico.config import load_config
    from pycalico.datastore import open_datastore
    from pycalico.model.felixconfig import FelixConfig

    ds = open_datastore(load_config(config_file), create=False)
    try:
        nodes = ds.list("Node").items
        spec: dict[str, object] = {}
        for fc in ds.list("FelixConfiguration").items:
            if (fc.get("metadata") or {}).get("name") == "default":
                spec = dict(fc.get("spec") or {})
    finally:
        ds.close()
    port = int(str(spec.get("flowLogsAPIPort") or DEFAULT_PORT))
    scheme = "https" if spec.get("flowLogsAPICertFile") else "http"
    directory = str(spec.get("flowLogsFileDirectory") or FelixConfig().flow_logs_file_directory)
    token = str(spec.get("flowLogsAPITokenFile") or default_token_file(directory))
    out = []
    for n in nodes:
        addr = str(((n.get("spec") or {}).get("bgp") or {}).get("ipv4Address") or "")
        if addr:
            out.append(f"{scheme}://{addr.split('/')[0]}:{port}")
    return out, token, str(spec.get("flowLogsAPICAFile") or "")


def collect(
    endpoints: list[str], flt: FlowFilter, creds: ClientCredentials | None = None
) -> list[FlowRecord]:
    """Records of every endpoint, merged by end time; FlowsError when none answered."""
    return gather(
        endpoints, lambda url: fetch_flows(url, flt, creds=creds)[1], 16, "node's flow API"
    )


def credentials(
    token_file: str, ca_file: str, cert_file: str, key_file: str, defaults: tuple[str, str]
) -> ClientCredentials:
    """The client's credentials; ``defaults`` (token file, CA file) fill in what was not
    given, the token file only when it exists."""
    default_token, default_ca = defaults
    if not token_file and not cert_file and default_token and Path(default_token).exists():
        token_file = default_token
    ca_file = ca_file or default_ca
    try:
        return ClientCredentials.load(token_file, ca_file, cert_file, key_file)
    except FlowAuthError as e:
        raise FlowsError(str(e)) from None


def endpoints_and_defaults(
    endpoints: tuple[str, ...], config_file: str | None
) -> tuple[list[str], tuple[str, str]]:
    """The URLs to ask and the default (token file, CA file): from the datastore, or with
    ``--endpoint`` the built-in token file (the node's own, when run on a node)."""
    if endpoints:
        from pycalico.model.felixconfig import FelixConfig

        return list(endpoints), (default_token_file(FelixConfig().flow_logs_file_directory), "")
    urls, token, ca = node_endpoints(config_file)
    return urls, (token, ca)


def credential_options(fn: Any) -> Any:
    """``--token-file --ca-file --cert-file --key-file`` (calicoctl flows, policy diff)."""
    opts = [
        click.option(
            "--token-file",
            envvar="CALICO_FLOWS_TOKEN_FILE",
            default="",
            help="The nodes' flow API token (mode 0600; default: FelixConfiguration's "
            "flowLogsAPITokenFile or <flowLogsFileDirectory>/api.token if it exists).",
        ),
        click.option(
            "--ca-file",
            envvar="CALICO_FLOWS_CA_FILE",
            default="",
            help="CA of HTTPS flow APIs (default: FelixConfiguration's flowLogsAPICAFile).",
        ),
        click.option(
            "--cert-file", envvar="CALICO_FLOWS_CERT_FILE", default="", help="Client certificate."
        ),
        click.option(
            "--key-file", envvar="CALICO_FLOWS_KEY_FILE", default="", help="Its private key."
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


@click.command("flows")
@filter_options
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    help="A node's flow API URL (default: every Node's address).",
)
@credential_options
@config_option
def flows(
    src: str,
    dst: str,
    action: str | None,
    policy: str,
    since: str,
    follow: bool,
    output: str,
    endpoints: tuple[str, ...],
    token_file: str,
    ca_file: str,
    cert_file: str,
    key_file: str,
    config_file: str | None,
) -> None:
    """Show flow logs of every node: who talked to whom, and which rule decided."""

    def go() -> None:
        flt = make_filter(src, dst, action, policy, since)
        urls, defaults = endpoints_and_defaults(endpoints, config_file)
        if not urls:
            raise FlowsError("no nodes with an address to query (use --endpoint URL)")
        creds = credentials(token_file, ca_file, cert_file, key_file, defaults)
        print_flows(lambda: collect(urls, flt, creds), follow, output)

    run_reporting_errors(go)


COMMANDS: list[click.Command] = [flows]
