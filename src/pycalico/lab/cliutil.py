"""Shared pieces of calico-lab's commands: common options, the error edge, lab loading.

Invariants: library errors (:class:`~pycalico.errors.CalicoError`, ``KeyError``, ``OSError``)
become one ``calico-lab: ...`` line on stderr and exit 1, only here, at the CLI edge.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import click

from pycalico.errors import CalicoError
from pycalico.lab.netns import runner
from pycalico.lab.state import DEFAULT_NAME, LabState

F = TypeVar("F", bound=Callable[..., Any])

name_option = click.option("--name", default=DEFAULT_NAME, show_default=True, help="Lab name.")
ip_version_option = click.option(
    "--ip-version",
    default=4,
    show_default=True,
    type=click.Choice(["4", "6"]),
    callback=lambda _c, _p, v: int(v),
    help="Probe the pods' IPv4 or IPv6 addresses (6: a --dual-stack lab).",
)


def say(msg: str) -> None:
    click.echo(msg)


def errors_to_exit(fn: F) -> F:
    @wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except (CalicoError, KeyError, OSError) as e:
            text = f"unknown: {e}" if isinstance(e, KeyError) else str(e)
            click.echo(f"calico-lab: {text}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def run_attached(
    argv: list[str], env: dict[str, str] | None = None, input: str | None = None
) -> NoReturn:
    """Run ``argv`` on our terminal and exit with its code (pass-through commands)."""
    r = runner().run_attached(argv, env=env, input=input)
    if r.stderr:
        click.echo(f"calico-lab: {r.stderr}", err=True)
    sys.exit(r.returncode)


def load(name: str) -> LabState:
    if not LabState.exists(name):
        raise CalicoError(f"no lab named {name!r} (calico-lab up --name {name})")
    return LabState.load(name)
