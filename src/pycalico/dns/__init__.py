"""pycalico.dns: workload name resolution served by calico-node.

Names (see :mod:`pycalico.dns.records`): ``<workload>.<namespace>.<zone>`` A/AAAA,
``_<port>._<proto>.<workload>.<namespace>.<zone>`` SRV, PTR for workload and node IPs,
``<node>.<node-zone>`` A/AAAA. Everything else is forwarded to upstreams or REFUSED.

Public API: :class:`DnsServer` (start/stop/wait_in_sync; a supervisor component named
``dns``), :data:`DNS_ADDRESS` (169.254.25.10, the address pods use), :func:`resolv_conf`
(the resolv.conf text / CNI ``dns`` block for a pod), :func:`upstreams_from_resolv_conf`,
:class:`DnsError`, :func:`server_from_env` (calico-node's ``CALICO_DNS_*`` variables);
the pure pieces :class:`RecordIndex` and :class:`Resolver`.
"""

from __future__ import annotations

from typing import Any

from pycalico.dns.config import server_from_env
from pycalico.dns.index import RecordIndex
from pycalico.dns.resolver import Resolver, ResolverSettings
from pycalico.dns.server import (
    DEFAULT_ZONE,
    DNS_ADDRESS,
    DnsError,
    DnsServer,
    parse_hostport,
    upstreams_from_resolv_conf,
)

RESOLV_OPTIONS = ("ndots:5", "timeout:1", "attempts:2")


def search_domains(namespace: str, zone: str = DEFAULT_ZONE) -> list[str]:
    """The search list of a pod in ``namespace``: ``<namespace>.<zone>``, ``<zone>``."""
    zone = zone.lower().rstrip(".")
    return [f"{namespace.lower()}.{zone}", zone] if namespace else [zone]


def cni_dns(namespace: str, zone: str = DEFAULT_ZONE, server: str = DNS_ADDRESS) -> dict[str, Any]:
    """The ``dns`` block of a CNI result for a pod in ``namespace`` (same content as
    :func:`resolv_conf`)."""
    return {
        "nameservers": [server],
        "search": search_domains(namespace, zone),
        "options": list(RESOLV_OPTIONS),
    }


def resolv_conf(namespace: str, zone: str = DEFAULT_ZONE, server: str = DNS_ADDRESS) -> str:
    """resolv.conf text for a pod in ``namespace`` (ndots:5 as Kubernetes: so that
    ``name.namespace`` is tried against the search list first)."""
    return (
        f"nameserver {server}\n"
        f"search {' '.join(search_domains(namespace, zone))}\n"
        f"options {' '.join(RESOLV_OPTIONS)}\n"
    )


__all__ = [
    "DEFAULT_ZONE",
    "DNS_ADDRESS",
    "DnsError",
    "DnsServer",
    "RecordIndex",
    "Resolver",
    "ResolverSettings",
    "cni_dns",
    "parse_hostport",
    "resolv_conf",
    "search_domains",
    "server_from_env",
    "upstreams_from_resolv_conf",
]
