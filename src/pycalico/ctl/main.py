"""calicoctl: the user's CLI for resources, IPAM, node status and policy insight."""

from __future__ import annotations

import click

from pycalico import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Manage pycalico resources, IPAM, nodes and policy."""


@cli.command()
def version() -> None:
    """Print the client version."""
    click.echo(f"Client Version:    v{__version__}")


def main() -> None:
    cli()
