"""calicoctl command family: ``policy explain``, ``policy matrix`` and ``policy diff``
(policy insight; ``diff`` replays recorded flow logs, :mod:`pycalico.flows.whatif`).

Owns only argument handling and presentation: the CLI lists every policy-relevant resource
from the datastore (:func:`load_resources`) and hands the dicts to
:class:`pycalico.felix.calc.PolicyInsight`, which makes every decision — enforced, and
pending (as if every staged policy were enforced): ``explain`` shows both side by side,
``matrix --pending`` prints the pending matrix, ``matrix -o json`` gives both per probe.

Invariant: library errors (:class:`~pycalico.errors.CalicoError`) become one clear message
on stderr and exit code 1; nothing here writes to the datastore.
"""

from __future__ import annotations

import json
from typing import Any

import click

from pycalico.client import policy_resources
from pycalico.ctl.common import config_option, run_reporting_errors
from pycalico.ctl.flows import credential_options
from pycalico.datastore.base import Datastore
from pycalico.felix.calc.insight import (
    InsightError,
    PolicyInsight,
    format_explanation,
    format_matrix,
    parse_port_list,
)


def load_resources(ds: Datastore) -> list[dict[str, Any]]:
    """Every stored resource of a kind in :data:`~pycalico.client.POLICY_KINDS`."""
    return policy_resources(ds)


def _insight(config_file: str | None) -> PolicyInsight:
    from pycalico.config import load_config
    from pycalico.datastore import open_datastore

    ds = open_datastore(load_config(config_file), create=False)
    try:
        resources = load_resources(ds)
    finally:
        ds.close()
    insight = PolicyInsight(resources)
    for line in insight.warnings:
        click.echo(f"Warning: {line}", err=True)
    return insight


_output_option = click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)


_ip_version_option = click.option(
    "--ip-version",
    type=click.Choice(["4", "6"]),
    default=None,
    callback=lambda _c, _p, v: int(v) if v else None,
    help="Evaluate over the workloads' IPv4 or IPv6 addresses (default: IPv4 where both "
    "ends have one, else IPv6).",
)


@click.group("policy")
def policy() -> None:
    """Policy insight: explain a flow's verdict, or print the reachability matrix."""


@policy.command("explain")
@click.option("--from", "src", required=True, help="Source: NAMESPACE/WORKLOAD or an IP.")
@click.option("--to", "dst", required=True, help="Destination: NAMESPACE/WORKLOAD or an IP.")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Destination port.")
@click.option("--protocol", default="TCP", show_default=True, help="TCP, UDP, SCTP, ICMP, ...")
@click.option(
    "--source-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Source port (unknown by default).",
)
@_ip_version_option
@_output_option
@config_option
def explain(
    src: str,
    dst: str,
    port: int | None,
    protocol: str,
    source_port: int | None,
    ip_version: int | None,
    output: str,
    config_file: str | None,
) -> None:
    """Explain which tier/policy/rule decides egress and ingress for one flow, enforced and
    pending (as if every staged policy were enforced), side by side."""

    def go() -> None:
        ex = _insight(config_file).explain(src, dst, port, protocol, source_port, ip_version)
        if output == "json":
            click.echo(json.dumps(ex.to_json(), indent=2))
        else:
            click.echo(format_explanation(ex))

    run_reporting_errors(go)


@policy.command("matrix")
@click.option(
    "--ports",
    default=None,
    help="Comma-separated PORT[/PROTOCOL] list, e.g. 80/TCP,81/UDP "
    "(default: the workloads' named ports, else 80/TCP).",
)
@click.option(
    "--pending",
    is_flag=True,
    help="Print the matrix as if every staged policy were enforced "
    "(-o json always gives both: 'verdict' and 'pending').",
)
@_ip_version_option
@_output_option
@config_option
def matrix(
    ports: str | None, pending: bool, ip_version: int | None, output: str, config_file: str | None
) -> None:
    """Print the reachability of every workload from every other workload."""

    def go() -> None:
        port_list = parse_port_list(ports) if ports else None
        if ports and not port_list:
            raise InsightError("--ports: no ports given")
        results = _insight(config_file).matrix(port_list, ip_version)
        if output == "json":
            click.echo(json.dumps({"probes": [r.to_json() for r in results]}, indent=2))
        else:
            if pending:
                click.echo("PENDING: as if every staged policy were enforced")
            click.echo(format_matrix(results, pending=pending))

    run_reporting_errors(go)


@policy.command("diff")
@click.option("-f", "--filename", required=True, help="Proposed resources (file, dir or -).")
@click.option("--since", default="1h", show_default=True, help="Recorded flows of this long.")
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    help="A node's flow API URL (default: every Node's address).",
)
@credential_options
@_output_option
@config_option
def diff(
    filename: str,
    since: str,
    endpoints: tuple[str, ...],
    token_file: str,
    ca_file: str,
    cert_file: str,
    key_file: str,
    output: str,
    config_file: str | None,
) -> None:
    """What-if: recorded flows whose verdict the proposed resources would change, and the
    reachability-matrix delta (nothing is written)."""
    from pycalico.api.codec import encode
    from pycalico.ctl.flows import collect, credentials, endpoints_and_defaults
    from pycalico.ctl.resources import read_manifests
    from pycalico.flows.cli import make_filter
    from pycalico.flows.whatif import format_whatif, policy_diff

    proposed = [encode(r) for r in read_manifests(filename, False)]

    def go() -> None:
        from pycalico.config import load_config
        from pycalico.datastore import open_datastore

        flt = make_filter("", "", None, "", since)
        urls, defaults = endpoints_and_defaults(endpoints, config_file)
        creds = credentials(token_file, ca_file, cert_file, key_file, defaults)
        records = collect(urls, flt, creds) if urls else []
        ds = open_datastore(load_config(config_file), create=False)
        try:
            current = load_resources(ds)
        finally:
            ds.close()
        result = policy_diff(records, current, proposed)
        if output == "json":
            click.echo(json.dumps(result.to_json(), indent=2))
        else:
            click.echo(format_whatif(result))

    run_reporting_errors(go)


COMMANDS: list[click.Command] = [policy]
