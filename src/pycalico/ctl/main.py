"""calicoctl: the user's CLI for resources, IPAM, node status and policy insight.

Each command family lives in its own module exposing ``COMMANDS: list[click.Command]``;
this module only assembles them, so families stay independent. A family is imported only
when one of its commands runs (or help lists them): ``calicoctl get`` never pays for the
flow-log client or the policy insight (:data:`_COMMANDS` maps each command to its family;
``tests/unit/test_ctl_lazy.py`` checks the map against the families' ``COMMANDS``).
"""

from __future__ import annotations

import importlib

import click

from pycalico import __version__
from pycalico.ctl.common import config_option

# Command name -> the module contributing it (each family module defines COMMANDS).
_COMMANDS = {
    "validate": "pycalico.ctl.validate",
    **dict.fromkeys(
        ("create", "apply", "replace", "delete", "get", "patch", "label"), "pycalico.ctl.resources"
    ),
    "ipam": "pycalico.ctl.ipam",
    "policy": "pycalico.ctl.policy",
    "node": "pycalico.ctl.node",
    "datastore": "pycalico.ctl.datastore_cmd",
    "ui": "pycalico.ctl.ui",
    "flows": "pycalico.ctl.flows",
}
_FAMILIES = tuple(dict.fromkeys(_COMMANDS.values()))


class _LazyGroup(click.Group):
    """A group whose family commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None or cmd_name not in _COMMANDS:
            return cmd
        for c in getattr(importlib.import_module(_COMMANDS[cmd_name]), "COMMANDS", []):
            if c.name == cmd_name:
                return c  # type: ignore[no-any-return]
        return None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def main() -> None:
    cli()
