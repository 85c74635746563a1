"""calicoctl command family: node."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
