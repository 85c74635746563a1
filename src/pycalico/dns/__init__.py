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

from pycalico.dns.config import server_from_env
from pycalico.dns.index import RecordIndex
from pycalico.dns.resolver import Resolver, ResolverSettings
from pycalico.dns.server import (
    DnsError,
    DnsServer,
    parse_hostport,
    upstreams_from_resolv_conf,
)
from pycalico.dnsconf import (
    DEFAULT_ZONE,
    DNS_ADDRESS,
    cni_dns,
    resolv_conf,
    search_domains,
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
