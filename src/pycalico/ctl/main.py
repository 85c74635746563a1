"""calicoctl: the user's CLI for resources, IPAM, node status and policy insight.

Each command family lives in its own module exposing ``COMMANDS: list[click.Command]``;
this module only assembles them, so families stay independent.
"""

from __future__ import annotations

import importlib

import click

from pycalico import __version__
from pycalico.ctl.common import config_option

# Modules contributing commands (each defines COMMANDS).
_FAMILIES = (
    "pycalico.ctl.validate",
    "pycalico.ctl.resources",
    "pycalico.ctl.ipam",
    "pycalico.ctl.policy",
    "pycalico.ctl.node",
    "pycalico.ctl.datastore_cmd",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Manage pycalico resources, IPAM, nodes and policy."""


@cli.command()
@click.option("--client", is_flag=True, help="Print only the client version.")
@config_option
def version(client: bool, config_file: str | None) -> None:
    """Print the client version and commit, and the cluster's (from ClusterInformation)."""
    from pycalico.system.buildinfo import git_commit

    click.echo(f"Client Version:    v{__version__}")
    click.echo(f"Git commit:        {git_commit()}")
    if client:
        return
    from pycalico.api import lookup
    from pycalico.client import ResourceClient
    from pycalico.config import ConfigError, load_config
    from pycalico.datastore import open_datastore
    from pycalico.errors import CalicoError

    info = lookup("projectcalico.org/v3", "ClusterInformation")
    spec: dict[str, object] = {}
    try:
        ds = open_datastore(load_config(config_file), create=False)
    except (CalicoError, ConfigError):
        ds = None  # no reachable datastore: the cluster is unknown
    if ds is not None and info is not None:
        try:
            spec = ResourceClient(ds).get(info, "default").get("spec") or {}
        except CalicoError:
            pass  # no ClusterInformation yet (no calico-node has started)
        finally:
            ds.close()
    click.echo(f"Cluster Version:   {spec.get('calicoVersion') or 'unknown'}")
    click.echo(f"Cluster Type:      {spec.get('clusterType') or 'unknown'}")


for _mod in _FAMILIES:
    for _cmd in getattr(importlib.import_module(_mod), "COMMANDS", []):
        cli.add_command(_cmd)


def main() -> None:
    cli()
