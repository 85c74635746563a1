"""calicoctl command family: datastore_cmd."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
