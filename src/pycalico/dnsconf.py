"""What a pod needs to know about cluster DNS: the server address, the zone, its search list.

Import-light on purpose (no DNS library): the CNI plugin uses it to fill the result's ``dns``
block, calico-lab to write a pod's resolv.conf; the server in :mod:`pycalico.dns` uses the
same constants.
"""

from __future__ import annotations

from typing import Any

DNS_ADDRESS = "169.254.25.10"
DEFAULT_ZONE = "pod.cluster.local"


def search_domains(namespace: str, zone: str = DEFAULT_ZONE) -> list[str]:
    """The search list of a pod in ``namespace``: ``<namespace>.<zone>``, ``<zone>``."""
    zone = zone.lower().rstrip(".")
    return [f"{namespace.lower()}.{zone}", zone] if namespace else [zone]


RESOLV_OPTIONS = ("ndots:5", "timeout:1", "attempts:2")


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
