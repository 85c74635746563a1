"""calico-lab: a whole multi-node pycalico cluster on one machine, in network namespaces."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Build and drive a multi-node lab cluster in network namespaces."""


def main() -> None:
    cli()
