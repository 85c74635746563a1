"""What ``calicoctl flows`` and ``calico-lab flows`` share: the filter options, the filter
built from them, and the print/follow loop over a record source (both programs import this;
programs never import each other).

Invariant: only presentation and option parsing; records come from ``fetch`` (a callable
returning every matching record of the cluster, oldest first).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import click

from pycalico.errors import CalicoError
from pycalico.flows.format import format_table, to_json
from pycalico.flows.options import filter_options as filter_options
from pycalico.flows.record import FlowRecord
from pycalico.flows.store import FilterError, FlowFilter

T = TypeVar("T")


class FlowsError(CalicoError):
    """Bad flows options, or no node answered."""


def gather(
    targets: Sequence[T], fetch: Callable[[T], list[FlowRecord]], workers: int, what: str
) -> list[FlowRecord]:
    """Every target's records (fetched in parallel), merged by end time. A target that
    fails is a warning on stderr; FlowsError when none answered (``what`` names them)."""
    out: list[FlowRecord] = []
    errors: list[str] = []
    # A fresh pool per call: its threads end with it (none outlives, e.g., a lab namespace).
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets)))) as pool:
        futures = [pool.submit(fetch, t) for t in targets]
        for fut in futures:
            try:
                out += fut.result()
            except CalicoError as e:
                errors.append(str(e))
    for msg in errors:
        click.echo(f"warning: {msg}", err=True)
    if targets and len(errors) == len(targets):
        raise FlowsError(f"no {what} answered")
    out.sort(key=lambda r: (r.end, r.node))
    return out


def since_seconds(text: str) -> float:
    from pycalico.model import ModelError
    from pycalico.model.durations import parse_duration

    try:
        return parse_duration(text)
    except (ModelError, ValueError) as e:
        raise FlowsError(f"--since: {e}") from None


def make_filter(src: str, dst: str, action: str | None, policy: str, since: str) -> FlowFilter:
    try:
        return FlowFilter(src, dst, action or "", policy, time.time() - since_seconds(since))
    except FilterError as e:
        raise FlowsError(str(e)) from None


def show(records: list[FlowRecord], output: str) -> str:
    if output == "json":
        return to_json(records)
    return format_table(records, wide=output == "wide")


def _ident(r: FlowRecord) -> tuple[str, float, Any]:
    return (r.node, r.start, r.key)


def _counts(r: FlowRecord) -> tuple[int, ...]:
    return (r.connections, r.packets_in, r.packets_out, r.bytes_in, r.bytes_out)


def print_flows(fetch: Callable[[], list[FlowRecord]], follow: bool, output: str) -> None:
    """Print the records; with ``follow`` keep printing new and updated ones every second
    (until interrupted)."""
    records = fetch()
    click.echo(show(records, output))
    seen = {_ident(r): _counts(r) for r in records}
    try:
        while follow:
            time.sleep(1.0)
            new = []
            for r in fetch():
                if seen.get(_ident(r)) != _counts(r):
                    seen[_ident(r)] = _counts(r)
                    new.append(r)
            if new:
                text = show(new, output)
                click.echo(text if output == "json" else "\n".join(text.splitlines()[1:]))
    except KeyboardInterrupt:
        pass
