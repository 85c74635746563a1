"""Shared edges of every calicoctl command family: config option, datastore opening, errors.

Library code raises typed errors; these helpers turn them into one line on stderr and exit
code 1, which is the only place calicoctl maps errors to exit codes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import click

from pycalico.datastore import Datastore
from pycalico.errors import CalicoError

config_option = click.option(
    "-c",
    "--config",
    "config_file",
    default=None,
    help="Path to the calicoctl.cfg-style config file (default /etc/calico/calicoctl.cfg).",
)


def fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(1)


@contextmanager
def open_store(config_file: str | None, *, create: bool = True) -> Iterator[Datastore]:
    """The configured datastore; configuration/availability problems end the command.

    Commands that only read or change existing data pass ``create=False``: they fail on an
    embedded datastore in a missing directory rather than creating an empty one."""
    from pycalico.config import ConfigError, load_config
    from pycalico.datastore import Unavailable, open_datastore

    try:
        ds = open_datastore(load_config(config_file), create=create)
    except (ConfigError, Unavailable) as e:
        fail(f"Failed to connect to the datastore: {e}")
    try:
        yield ds
    finally:
        ds.close()


def run_reporting_errors(fn: Callable[[], None]) -> None:
    """Run ``fn``; a typed error or OS error becomes ``Error: ...`` and exit 1."""
    try:
        fn()
    except (CalicoError, OSError) as e:
        fail(f"Error: {e}")
