"""calicoctl command family: ``policy explain`` and ``policy matrix`` (policy insight).

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

from pycalico.ctl.common import config_option, run_reporting_errors
from pycalico.datastore.base import ROOT, Datastore
from pycalico.felix.calc.insight import (
    InsightError,
    PolicyInsight,
    format_explanation,
    format_matrix,
    parse_port_list,
)

#: Kinds the policy model reads (plus v1 Namespace/ServiceAccount, k8s NetworkPolicy and
#: ClusterNetworkPolicy).
POLICY_KINDS = (
    "WorkloadEndpoint",
    "HostEndpoint",
    "Profile",
    "NetworkPolicy",
    "GlobalNetworkPolicy",
    "StagedNetworkPolicy",
    "StagedGlobalNetworkPolicy",
    "StagedKubernetesNetworkPolicy",
    "ClusterNetworkPolicy",
    "Tier",
    "NetworkSet",
    "GlobalNetworkSet",
    "Namespace",
    "ServiceAccount",
)


def load_resources(ds: Datastore) -> list[dict[str, Any]]:
    """Every stored resource of a kind in :data:`POLICY_KINDS`, in key order."""
    items = ds.list_prefix(ROOT).items
    return [dict(r) for r in items if r.get("kind") in POLICY_KINDS]


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
@_output_option
@config_option
def explain(
    src: str,
    dst: str,
    port: int | None,
    protocol: str,
    source_port: int | None,
    output: str,
    config_file: str | None,
) -> None:
    """Explain which tier/policy/rule decides egress and ingress for one flow, enforced and
    pending (as if every staged policy were enforced), side by side."""

    def go() -> None:
        ex = _insight(config_file).explain(src, dst, port, protocol, source_port)
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
@_output_option
@config_option
def matrix(ports: str | None, pending: bool, output: str, config_file: str | None) -> None:
    """Print the reachability of every workload from every other workload."""

    def go() -> None:
        port_list = parse_port_list(ports) if ports else None
        if ports and not port_list:
            raise InsightError("--ports: no ports given")
        results = _insight(config_file).matrix(port_list)
        if output == "json":
            click.echo(json.dumps({"probes": [r.to_json() for r in results]}, indent=2))
        else:
            if pending:
                click.echo("PENDING: as if every staged policy were enforced")
            click.echo(format_matrix(results, pending=pending))

    run_reporting_errors(go)


COMMANDS: list[click.Command] = [policy]
