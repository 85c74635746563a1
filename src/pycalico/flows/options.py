"""The flow-log filter options of ``calicoctl flows`` and ``calico-lab flows`` (pure click).

Its own module, importing nothing of pycalico, so a CLI that merely declares the options
(``calico-lab``: every ``pod add`` of a churn run starts it) does not import the flow
formatter and, through it, the whole Felix calc graph. :mod:`pycalico.flows.cli`
re-exports :func:`filter_options`.
"""

from __future__ import annotations

from typing import Any

import click


def filter_options(fn: Any) -> Any:
    """``--from --to --action --policy --since --follow -o`` (calicoctl's and the lab's)."""
    opts = [
        click.option("--from", "src", default="", help="NAMESPACE/NAME, NAMESPACE/* or CIDR."),
        click.option("--to", "dst", default="", help="NAMESPACE/NAME, NAMESPACE/* or CIDR."),
        click.option("--action", type=click.Choice(["allow", "deny"]), default=None),
        click.option(
            "--policy",
            default="",
            help="Policy name (kind/name, ns/name, tier/name), 'end-of-tier' or 'profile'.",
        ),
        click.option("--since", default="15m", show_default=True, help="Go duration."),
        click.option("--follow", "-f", is_flag=True, help="Keep printing new flows."),
        click.option(
            "-o",
            "--output",
            type=click.Choice(["table", "json", "wide"]),
            default="table",
            show_default=True,
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn
