"""calico-node: the per-host agent (Felix, BGP renderer with BIRD, DNS).

Command families live in their own modules exposing ``COMMANDS: list[click.Command]``.
"""

from __future__ import annotations

import importlib

import click

from pycalico import __version__

_FAMILIES = (
    "pycalico.node.install_cni",
    "pycalico.node.agent",
    "pycalico.node.hostinstall",
    "pycalico.node.uninstall",
)


def _version_message() -> str:
    from pycalico.system.buildinfo import git_commit

    return f"calico-node (pycalico) v{__version__}, commit {git_commit()}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-v", message=_version_message())
def cli() -> None:
    """Run and inspect the pycalico node agent."""


for _mod in _FAMILIES:
    for _cmd in getattr(importlib.import_module(_mod), "COMMANDS", []):
        cli.add_command(_cmd)


def main() -> None:
    cli()
