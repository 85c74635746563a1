"""calicoctl: the user's CLI for resources, IPAM, node status and policy insight.

Each command family lives in its own module exposing ``COMMANDS: list[click.Command]``;
this module only assembles them, so families stay independent.
"""

from __future__ import annotations

import importlib

import click

from pycalico import __version__

# Modules contributing commands (each defines COMMANDS).
_FAMILIES = (
    "pycalico.ctl.validate",
    "pycalico.ctl.resources",
    "pycalico.ctl.ipam",
    "pycalico.ctl.policy",
    "pycalico.ctl.node",
    "pycalico.ctl.datastore_cmd",
    "pycalico.ctl.flows",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Manage pycalico resources, IPAM, nodes and policy."""


@cli.command()
@click.option("--client", is_flag=True, help="Print only the client version.")
def version(client: bool) -> None:
    """Print the client version."""
    click.echo(f"Client Version:    v{__version__}")


for _mod in _FAMILIES:
    for _cmd in getattr(importlib.import_module(_mod), "COMMANDS", []):
        cli.add_command(_cmd)


def main() -> None:
    cli()
