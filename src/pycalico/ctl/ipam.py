"""calicoctl command family: ``ipam show | check | release | configure | split``.

Owns only presentation and argument handling; every decision is made by :mod:`pycalico.ipam`
(allocator) and :mod:`pycalico.ipam.gc` (check/report). Invariant: library errors
(:class:`~pycalico.errors.CalicoError`) become one clear message on stderr and exit code 1.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

import click

from pycalico.ctl.common import config_option, open_store, run_reporting_errors
from pycalico.datastore.base import Datastore
from pycalico.ipam import IPAM, IPAMConfig
from pycalico.ipam.block import Block, IPNetwork, affinity_node, reserved_ordinals
from pycalico.ipam.gc import check, load_report, release_from_report
from pycalico.ipam.pools import reservations_from
from pycalico.ipam.store import KIND_RESERVATION
from pycalico.model.booleans import BooleanError, parse_bool


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A bordered table in the style of calicoctl's tablewriter output."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(vals: Sequence[str], center: bool = False) -> str:
        parts = [(v.center(w) if center else v.ljust(w)) for v, w in zip(vals, widths, strict=True)]
        return "| " + " | ".join(parts) + " |"

    out = [sep, line(list(headers), center=True), sep]
    out += [line(r) for r in cells]
    out.append(sep)
    return "\n".join(out)


def _pct(n: int, total: int) -> str:
    return f"{n} ({round(100 * n / total) if total else 0}%)"


@click.group("ipam")
def ipam_group() -> None:
    """IP address management: show usage, check for leaks, release, configure."""


@ipam_group.command("show")
@click.option("--ip", "ip", default=None, help="Report whether this IP is in use and by what.")
@click.option("--show-blocks", is_flag=True, help="Add one row per allocation block.")
@click.option("--show-borrowed", is_flag=True, help="List IPs borrowed from other nodes' blocks.")
@click.option("--show-configuration", is_flag=True, help="Show the IPAM configuration.")
@config_option
def show_cmd(
    ip: str | None,
    show_blocks: bool,
    show_borrowed: bool,
    show_configuration: bool,
    config_file: str | None,
) -> None:
    """Show IP pool and block usage."""

    def go() -> None:
        with open_store(config_file, create=False) as ds:
            ipam = IPAM(ds)
            if show_configuration:
                cfg = ipam.get_config()
                rows = [
                    ("StrictAffinity", str(cfg.strict_affinity).lower()),
                    ("AutoAllocateBlocks", str(cfg.auto_allocate_blocks).lower()),
                    ("MaxBlocksPerHost", cfg.max_blocks_per_host),
                    ("IPCooldownSeconds", cfg.ip_cooldown_seconds),
                ]
                click.echo(render_table(("PROPERTY", "VALUE"), rows))
                return
            if ip is not None:
                _show_ip(ipam, ip)
                return
            if show_borrowed:
                _show_borrowed(ipam)
                return
            _show_usage(ipam, ds, show_blocks)

    run_reporting_errors(go)


def _show_ip(ipam: IPAM, ip: str) -> None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        click.echo(f"Error: --ip: {ip!r} is not an IP address", err=True)
        raise SystemExit(1) from None
    info = ipam.get_assignment_attributes(addr)
    if info is None:
        since = ipam.released_at(addr)
        if since is not None:
            click.echo(f"IP {addr} is in cooldown (released at {since})")
        else:
            click.echo(f"IP {addr} is not assigned")
        return
    click.echo(f"IP {addr} is in use")
    click.echo(f"Handle: {info.handle_id}")
    click.echo(f"Block: {info.block} (affinity {info.block_affinity or 'none'})")
    if info.attrs:
        click.echo("Attributes:")
        for k in sorted(info.attrs):
            click.echo(f"  {k}: {info.attrs[k]}")


def _show_borrowed(ipam: IPAM) -> None:
    rows = []
    for sb in ipam.store.blocks():
        owner = affinity_node(sb.block.affinity)
        for addr, rec in sb.block.allocated():
            attrs = rec.get("secondary") or {}
            node = attrs.get("node")
            if node and node != owner:
                typ = attrs.get("type") or ("pod" if attrs.get("pod") else "")
                to = (
                    f"{attrs['namespace']}/{attrs['pod']}"
                    if attrs.get("pod")
                    else str(rec.get("handle_id") or "")
                )
                rows.append((str(addr), node, str(sb.block.cidr), owner or "", typ, to))
    headers = ("IP", "BORROWING-NODE", "BLOCK", "BLOCK OWNER", "TYPE", "ALLOCATED-TO")
    click.echo(render_table(headers, rows))


def covered_count(cidr: IPNetwork, reserved: Sequence[IPNetwork]) -> int:
    """How many addresses of ``cidr`` lie in the union of the ``reserved`` networks.

    Works on merged intervals, so a huge pool (an IPv6 /48) costs nothing extra.
    """
    lo_c, hi_c = int(cidr.network_address), int(cidr.broadcast_address)
    spans = sorted(
        (max(int(r.network_address), lo_c), min(int(r.broadcast_address), hi_c))
        for r in reserved
        if r.version == cidr.version and r.overlaps(cidr)
    )
    total, end = 0, lo_c - 1
    for lo, hi in spans:
        lo = max(lo, end + 1)
        if hi >= lo:
            total += hi - lo + 1
            end = hi
    return total


def block_reserved(block: Block, reserved: Sequence[IPNetwork]) -> tuple[int, int]:
    """``(reserved and not allocated, reserved but allocated)`` ordinals of ``block``.

    An address an IPReservation covers but that was allocated before the reservation existed
    counts as in use, not reserved (as in Calico), so IPS FREE never double-subtracts it.
    """
    rsv = reserved_ordinals(block.cidr, reserved) if reserved else frozenset()
    if not rsv:
        return 0, 0
    free_rsv = len(rsv.intersection(block.unallocated))
    return free_rsv, len(rsv) - free_rsv


def _show_usage(ipam: IPAM, ds: Datastore, show_blocks: bool) -> None:
    pools = sorted(ipam.store.pools(), key=lambda p: (p.version, p.cidr.network_address))
    blocks = ipam.store.blocks()
    reserved = reservations_from(ds.list(KIND_RESERVATION).items)
    rows: list[tuple[Any, ...]] = []
    for p in pools:
        in_pool = sorted(
            (b for b in blocks if p.contains(b.block.cidr)),
            key=lambda b: int(b.block.cidr.network_address),
        )
        used = sum(b.block.num_allocated() for b in in_pool)
        total = p.cidr.num_addresses
        per_block = [block_reserved(b.block, reserved) for b in in_pool]
        rsv = covered_count(p.cidr, reserved) - sum(taken for _, taken in per_block)
        free = total - used - rsv
        rows.append(
            ("IP Pool", str(p.cidr), total, _pct(used, total), _pct(rsv, total), _pct(free, total))
        )
        if show_blocks:
            for b, (r, _) in zip(in_pool, per_block, strict=True):
                n = b.block.size
                u = b.block.num_allocated()
                rows.append(
                    ("Block", str(b.block.cidr), n, _pct(u, n), _pct(r, n), _pct(n - u - r, n))
                )
    headers = ("GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS RESERVED", "IPS FREE")
    click.echo(render_table(headers, rows))
    if reserved:
        click.echo(f"Reserved CIDRs (never auto-assigned): {', '.join(map(str, reserved))}")


@ipam_group.command("check")
@click.option("-o", "--output", "output", default=None, help="Write a JSON report to this file.")
@click.option("--show-all-ips", is_flag=True, help="Print every allocation, not only problems.")
@click.option("--show-problem-ips", is_flag=True, help="Print every problem IP.")
@config_option
def check_cmd(
    output: str | None, show_all_ips: bool, show_problem_ips: bool, config_file: str | None
) -> None:
    """Check IPAM for leaked, missing and duplicate allocations."""

    def go() -> None:
        with open_store(config_file, create=False) as ds:
            click.echo("Checking IPAM for inconsistencies...\n")
            rep = check(ds)
            click.echo(f"Found {rep.blocks} IPAM blocks with {rep.allocations} allocations.")
            if show_all_ips:
                for sb in IPAM(ds).store.blocks():
                    for addr, rec in sb.block.allocated():
                        click.echo(f"  {addr} handle={rec.get('handle_id')} block={sb.block.cidr}")
            click.echo(
                f"Found {len(rep.leaked)} IPs that are allocated in IPAM but not actually in use."
            )
            if show_problem_ips or show_all_ips:
                for lk in rep.leaked:
                    click.echo(f"  {lk.ip} handle={lk.handle} block={lk.block}: {lk.reason}")
            click.echo(
                f"Found {len(rep.in_use_not_allocated)} in-use IPs that are not allocated in IPAM."
            )
            click.echo(f"Found {len(rep.outside_pools)} in-use IPs that are not in any IP pool.")
            click.echo(f"Found {len(rep.duplicates)} IPs used by more than one workload.")
            if show_problem_ips:
                for item in rep.in_use_not_allocated + rep.outside_pools + rep.duplicates:
                    click.echo(f"  {json.dumps(item, sort_keys=True)}")
            click.echo(f"Found {len(rep.stale_affinities)} block affinities of deleted nodes.")
            for a in rep.stale_affinities:
                click.echo(f"  node {a['node']} block {a['cidr']}")
            click.echo(f"Found {len(rep.orphan_affinities)} block affinities without their block.")
            for a in rep.orphan_affinities:
                click.echo(f"  node {a['node']} block {a['cidr']} ({a['state']})")
            click.echo(f"Found {len(rep.handle_mismatches)} handles that disagree with blocks.")
            if output:
                with open(output, "w") as f:
                    json.dump(rep.to_json(), f, indent=2, sort_keys=True)
                click.echo(f"Report written to {output}")
            click.echo(f"\nCheck complete; found {rep.problems} problems.")

    run_reporting_errors(go)


@ipam_group.command("release")
@click.option("--ip", "ip", default=None, help="The IP address to release.")
@click.option(
    "--from-report", "report", default=None, help="Release the leaked IPs of an ipam check report."
)
@config_option
def release_cmd(ip: str | None, report: str | None, config_file: str | None) -> None:
    """Release an IP address, or every leak listed in a check report."""
    if (ip is None) == (report is None):
        click.echo("Error: exactly one of --ip or --from-report is required", err=True)
        raise SystemExit(1)

    def go() -> None:
        with open_store(config_file, create=False) as ds:
            ipam = IPAM(ds)
            if ip is not None:
                try:
                    addr = ipaddress.ip_address(ip)
                except ValueError:
                    click.echo(f"Error: --ip: {ip!r} is not an IP address", err=True)
                    raise SystemExit(1) from None
                if ipam.release_ips([addr]):
                    click.echo(f"Error: IP address {addr} is not assigned", err=True)
                    raise SystemExit(1)
                click.echo(f"Successfully released IP address {addr}")
                return
            assert report is not None
            rep = load_report(report)
            released, skipped = release_from_report(ipam, rep)
            for s in skipped:
                click.echo(f"Skipped {s}: reallocated or already released since the report")
            click.echo(f"Released {len(released)} of {len(rep.leaked)} leaked IPs from {report}")

    run_reporting_errors(go)


def _parse_bool(value: str | None, name: str) -> bool | None:
    if value is None:
        return None
    try:
        return parse_bool(value, name)
    except BooleanError as e:
        click.echo(f"Error: {e}", err=True)
        raise SystemExit(1) from None


@ipam_group.command("configure")
@click.option("--strictaffinity", default=None, help="true|false: forbid borrowing IPs.")
@click.option("--max-blocks-per-host", type=int, default=None, help="Blocks per host (0 = 20).")
@click.option("--autoallocateblocks", default=None, help="true|false: claim blocks on demand.")
@click.option(
    "--ip-cooldown-seconds",
    type=int,
    default=None,
    help="Seconds a released IP stays unused before it can be reallocated (0-1200).",
)
@config_option
def configure_cmd(
    strictaffinity: str | None,
    max_blocks_per_host: int | None,
    autoallocateblocks: str | None,
    ip_cooldown_seconds: int | None,
    config_file: str | None,
) -> None:
    """Change the IPAM configuration."""
    strict = _parse_bool(strictaffinity, "--strictaffinity")
    auto = _parse_bool(autoallocateblocks, "--autoallocateblocks")
    if (strict, max_blocks_per_host, auto, ip_cooldown_seconds) == (None, None, None, None):
        click.echo(
            "Error: nothing to configure (give --strictaffinity, --max-blocks-per-host, "
            "--autoallocateblocks or --ip-cooldown-seconds)"
        )
        raise SystemExit(1)

    def go() -> None:
        with open_store(config_file) as ds:
            ipam = IPAM(ds)
            cur = ipam.get_config()
            new = IPAMConfig(
                strict_affinity=cur.strict_affinity if strict is None else strict,
                max_blocks_per_host=(
                    cur.max_blocks_per_host if max_blocks_per_host is None else max_blocks_per_host
                ),
                auto_allocate_blocks=cur.auto_allocate_blocks if auto is None else auto,
                ip_cooldown_seconds=(
                    cur.ip_cooldown_seconds if ip_cooldown_seconds is None else ip_cooldown_seconds
                ),
            )
            ipam.set_config(new)
            click.echo(
                f"Successfully set StrictAffinity={str(new.strict_affinity).lower()} "
                f"MaxBlocksPerHost={new.max_blocks_per_host} "
                f"AutoAllocateBlocks={str(new.auto_allocate_blocks).lower()} "
                f"IPCooldownSeconds={new.ip_cooldown_seconds}"
            )

    run_reporting_errors(go)


@ipam_group.command("split")
@click.argument("number")
@click.option("--cidr", default=None, help="CIDR of the IP pool to split.")
@click.option("--name", "pool_name", default=None, help="Name of the IP pool to split.")
@config_option
def split_cmd(
    number: str, cidr: str | None, pool_name: str | None, config_file: str | None
) -> None:
    """Split an IP pool into NUMBER (a power of 2) equal pools; needs the datastore locked
    (calicoctl datastore migrate lock)."""
    from pycalico.ipam.split import plan_split, split_pool

    try:
        parts = int(number)
    except ValueError:
        click.echo(f"Error: NUMBER: {number!r} is not a valid number", err=True)
        raise SystemExit(1) from None

    def go() -> None:
        with open_store(config_file, create=False) as ds:
            plan = plan_split(ds, parts, cidr, pool_name)
            created = split_pool(ds, plan)
        click.echo(f"IP Pool {plan.name} was successfully split into {parts} smaller pools.")
        for c in created:
            click.echo(f"Created {c['metadata']['name']} with CIDR {c['spec']['cidr']}.")
        click.echo(
            "Unlock the datastore (calicoctl datastore migrate unlock) to resume IPAM; "
            "see docs/ipam.md for the remaining steps."
        )

    run_reporting_errors(go)


COMMANDS: list[click.Command] = [ipam_group]
