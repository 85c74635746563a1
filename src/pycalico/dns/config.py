"""DNS server settings from calico-node's environment (the one place the variables are read).

Variables (all optional):
- ``CALICO_DNS_ENABLED``: ``true`` (default) / ``false``;
- ``CALICO_DNS_LISTEN``: comma-separated ``ADDR[:PORT]`` (default ``169.254.25.10:53``);
- ``CALICO_DNS_ZONE``: workload zone (default ``pod.cluster.local``);
- ``CALICO_DNS_NODE_ZONE``: node-name zone (default: the zone with ``node`` as first label);
- ``CALICO_DNS_UPSTREAMS``: comma-separated ``ADDR[:PORT]``, or ``resolv.conf`` to use the
  node's ``/etc/resolv.conf`` nameservers; empty (default) = REFUSED for other names;
- ``CALICO_DNS_TTL`` (default 5), ``CALICO_DNS_NEGATIVE_TTL`` (default 1),
  ``CALICO_DNS_UPSTREAM_TIMEOUT`` seconds per upstream (default 1.0).

Invariant: a bad value raises :class:`DnsError` naming the variable; nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Mapping

from pycalico.datastore import Datastore
from pycalico.datastore.hub import SyncerHub
from pycalico.dns.server import (
    DnsError,
    DnsServer,
    parse_hostport,
    upstreams_from_resolv_conf,
)
from pycalico.dnsconf import DEFAULT_ZONE, DNS_ADDRESS
from pycalico.model.booleans import BooleanError, env_flag


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise DnsError(f"{key}: not an integer: {raw!r}") from None


def _addrs(env: Mapping[str, str], key: str) -> list[tuple[str, int]]:
    out = []
    for part in env.get(key, "").split(","):
        if part.strip():
            try:
                out.append(parse_hostport(part))
            except DnsError as e:
                raise DnsError(f"{key}: {e}") from None
    return out


def server_from_env(
    datastore: Datastore, node_name: str, env: Mapping[str, str], hub: SyncerHub | None = None
) -> DnsServer | None:
    """The node's :class:`DnsServer` as ``env`` configures it (None when disabled); it follows
    the datastore through ``hub`` when given."""
    try:
        if not env_flag(env, "CALICO_DNS_ENABLED", True):
            return None
    except BooleanError as e:
        raise DnsError(str(e)) from None
    listen = _addrs(env, "CALICO_DNS_LISTEN") or [(DNS_ADDRESS, 53)]
    if env.get("CALICO_DNS_UPSTREAMS", "").strip().lower() == "resolv.conf":
        upstreams = upstreams_from_resolv_conf(exclude=[h for h, _ in listen])
    else:
        upstreams = _addrs(env, "CALICO_DNS_UPSTREAMS")
    raw_timeout = env.get("CALICO_DNS_UPSTREAM_TIMEOUT", "").strip() or "1.0"
    try:
        timeout = float(raw_timeout)
    except ValueError:
        raise DnsError(f"CALICO_DNS_UPSTREAM_TIMEOUT: not a number: {raw_timeout!r}") from None
    return DnsServer(
        datastore,
        node_name,
        listen,
        env.get("CALICO_DNS_ZONE", "").strip() or DEFAULT_ZONE,
        upstreams,
        node_zone=env.get("CALICO_DNS_NODE_ZONE", "").strip(),
        ttl=_int(env, "CALICO_DNS_TTL", 5),
        negative_ttl=_int(env, "CALICO_DNS_NEGATIVE_TTL", 1),
        upstream_timeout=timeout,
        hub=hub,
    )
