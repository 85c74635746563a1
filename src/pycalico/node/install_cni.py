"""calico-node command family: install_cni."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
