"""calico-node command family: agent."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
