"""calicoctl command ``ui``: serve the web console.

The console is its own program (:mod:`pycalico.ui`, run as ``python -m pycalico.ui``):
calicoctl runs it attached to this terminal with every argument passed through, and exits
with its exit code (programs use each other as programs, never by import).
"""

from __future__ import annotations

import sys

import click

from pycalico.system.process import SubprocessRunner


@click.command(
    "ui",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ui(args: tuple[str, ...]) -> None:
    """Serve the web console (--listen 127.0.0.1:9443, --token; see --help)."""
    r = SubprocessRunner().run_attached([sys.executable, "-m", "pycalico.ui", *args])
    if r.stderr:
        click.echo(f"calicoctl ui: {r.stderr}", err=True)
    sys.exit(r.returncode)


COMMANDS: list[click.Command] = [ui]
