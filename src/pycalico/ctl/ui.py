"""calicoctl command ``ui``: serve the web console.

The console is its own program (:mod:`pycalico.ui`, run as ``python -m pycalico.ui``):
calicoctl runs it attached to this terminal with every argument passed through, and exits
with its exit code (programs use each other as programs, never by import). SIGTERM stops
the console too (it becomes KeyboardInterrupt here, on which the child is killed), so no
console outlives the command.
"""

from __future__ import annotations

import signal
import sys
from typing import Any, NoReturn

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
    signal.signal(signal.SIGTERM, _interrupt)
    r = SubprocessRunner().run_attached([sys.executable, "-m", "pycalico.ui", *args])
    if r.stderr:
        click.echo(f"calicoctl ui: {r.stderr}", err=True)
    sys.exit(r.returncode)


def _interrupt(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt


COMMANDS: list[click.Command] = [ui]
