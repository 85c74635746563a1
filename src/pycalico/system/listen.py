"""Listening addresses of pycalico's own servers (console, flow API): what counts as local.

Invariant: pure; ``localhost`` and every loopback address (127.0.0.0/8, ::1) are local,
anything else (a name, an unspecified or routable address) is not.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether a server bound to ``host`` is reachable from this host only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
