"""calico-node: the per-host agent (Felix, BGP renderer with BIRD, DNS)."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Run and inspect the pycalico node agent."""


def main() -> None:
    cli()
