"""Network-namespace path helpers (no side effects except reading the filesystem).

A namespace is referred to by its path (``CNI_NETNS``: ``/run/netns/<name>``,
``/var/run/netns/<name>`` or ``/proc/<pid>/ns/net``). Namespaces bind-mounted under the
standard directories are addressed by name (``ip -n <name>``: no extra process); any other
path goes through ``nsenter --net=<path>``.
"""

from __future__ import annotations

import os

NETNS_DIRS = ("/run/netns", "/var/run/netns")


def netns_name(path: str) -> str | None:
    """The ``ip netns`` name of ``path`` if it lives in a standard netns dir, else None."""
    d, _, base = path.rpartition("/")
    if d in NETNS_DIRS and base:
        return base
    return None


def ip_prefix(path: str | None) -> list[str]:
    """argv prefix running ``ip`` inside the namespace at ``path`` (None = current)."""
    if path is None:
        return ["ip"]
    name = netns_name(path)
    if name is not None:
        return ["ip", "-n", name]
    return ["nsenter", f"--net={path}", "ip"]


def exists(path: str) -> bool:
    return bool(path) and os.path.exists(path)


def same_as_current(path: str) -> bool:
    """True if ``path`` is the namespace this process runs in (CNI error 8 territory)."""
    try:
        a = os.stat(path)
        b = os.stat("/proc/self/ns/net")
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
