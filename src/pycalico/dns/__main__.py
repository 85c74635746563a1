"""``python -m pycalico.dns``: run the DNS server alone (tests, benchmarks, debugging).

Reads the datastore settings like every command (``DATASTORE_TYPE``,
``CALICO_DATASTORE_PATH``, ``ETCD_ENDPOINTS``); prints ``in-sync`` on stdout once the index
holds the datastore's state; runs until SIGTERM/SIGINT. Exit 1 on a configuration or bind
error.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from pycalico.dns.server import DnsError, DnsServer, parse_hostport
from pycalico.dnsconf import DEFAULT_ZONE, DNS_ADDRESS
from pycalico.errors import CalicoError


@click.command()
@click.option("--listen", "-l", multiple=True, help=f"ADDR[:PORT] (default {DNS_ADDRESS}:53).")
@click.option("--zone", default=DEFAULT_ZONE, show_default=True)
@click.option("--node-zone", default="", help="Default: the zone with 'node' as first label.")
@click.option("--upstream", "-u", multiple=True, help="ADDR[:PORT] of a resolver to forward to.")
@click.option("--node-name", default="", help="This node's name (for logs).")
@click.option("--ttl", default=5, show_default=True)
@click.option("--negative-ttl", default=1, show_default=True)
@click.option("--upstream-timeout", default=1.0, show_default=True)
@click.option("--cache-size", default=20000, show_default=True, help="0 disables the cache.")
def main(
    listen: tuple[str, ...],
    zone: str,
    node_zone: str,
    upstream: tuple[str, ...],
    node_name: str,
    ttl: int,
    negative_ttl: int,
    upstream_timeout: float,
    cache_size: int,
) -> None:
    """Serve workload DNS from the datastore."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pycalico.datastore import open_datastore

    try:
        addrs = [parse_hostport(x) for x in listen] or [(DNS_ADDRESS, 53)]
        ups = [parse_hostport(x) for x in upstream]
        server = DnsServer(
            open_datastore(),
            node_name,
            addrs,
            zone,
            ups,
            node_zone=node_zone,
            ttl=ttl,
            negative_ttl=negative_ttl,
            upstream_timeout=upstream_timeout,
            cache_size=cache_size,
        )
        server.start()
    except (DnsError, CalicoError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        if server.wait_in_sync(0.1):
            click.echo("in-sync " + " ".join(f"{h}:{p}" for h, p in server.bound))
            sys.stdout.flush()
            break
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
