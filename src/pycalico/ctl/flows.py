"""calicoctl command family: ``flows`` — query the flow logs of every node.

Owns the fan-out: each node serves its own records on its flow API
(:mod:`pycalico.flows.api`, ``http://<node address>:<flowLogsAPIPort>``); the addresses are
the Node resources' BGP IPv4 addresses (``--endpoint URL``, repeatable, overrides them).
Records of all nodes are merged by time and printed by :mod:`pycalico.flows.cli`.

Invariant: read-only; a node that cannot be queried is named on stderr and the others are
still shown; exit 1 only when no node answered (or for a bad option).
"""

from __future__ import annotations

import click

from pycalico.ctl.common import config_option, run_reporting_errors
from pycalico.flows.api import DEFAULT_PORT, fetch_flows
from pycalico.flows.cli import FlowsError, filter_options, gather, make_filter, print_flows
from pycalico.flows.record import FlowRecord
from pycalico.flows.store import FlowFilter


def node_endpoints(config_file: str | None) -> list[str]:
    """``http://<ip>:<port>`` of every Node with a BGP IPv4 address."""
    from pycalico.config import load_config
    from pycalico.datastore import open_datastore

    ds = open_datastore(load_config(config_file), create=False)
    try:
        nodes = ds.list("Node").items
        port = DEFAULT_PORT
        for fc in ds.list("FelixConfiguration").items:
            if (fc.get("metadata") or {}).get("name") == "default":
                port = int((fc.get("spec") or {}).get("flowLogsAPIPort") or port)
    finally:
        ds.close()
    out = []
    for n in nodes:
        addr = str(((n.get("spec") or {}).get("bgp") or {}).get("ipv4Address") or "")
        if addr:
            out.append(f"http://{addr.split('/')[0]}:{port}")
    return out


def collect(endpoints: list[str], flt: FlowFilter) -> list[FlowRecord]:
    """Records of every endpoint, merged by end time; FlowsError when none answered."""
    return gather(endpoints, lambda url: fetch_flows(url, flt)[1], 16, "node's flow API")


@click.command("flows")
@filter_options
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    help="A node's flow API URL (default: every Node's address).",
)
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
    config_file: str | None,
) -> None:
    """Show flow logs of every node: who talked to whom, and which rule decided."""

    def go() -> None:
        flt = make_filter(src, dst, action, policy, since)
        urls = list(endpoints) or node_endpoints(config_file)
        if not urls:
            raise FlowsError("no nodes with an address to query (use --endpoint URL)")
        print_flows(lambda: collect(urls, flt), follow, output)

    run_reporting_errors(go)


COMMANDS: list[click.Command] = [flows]
