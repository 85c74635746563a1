"""Sysctl seam: read/write kernel parameters of the *current* network namespace.

``/proc/sys/net/...`` resolves against the netns of the process that opens it, so a
:class:`ProcSysctl` used from a plugin running in the host namespace configures host-side
interfaces. Keys use dots (``net.ipv4.conf.cali123.proxy_arp``); interface names never
contain dots in pycalico, so the dot/slash translation is unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pycalico.errors import CalicoError


class SysctlError(CalicoError):
    """A sysctl could not be read or written."""


class Sysctl(Protocol):
    def write(self, key: str, value: str | int) -> None: ...

    def read(self, key: str) -> str: ...

    def exists(self, key: str) -> bool: ...


def _path(root: str, key: str) -> str:
    return f"{root}/{key.replace('.', '/')}"


class ProcSysctl:
    def __init__(self, root: str = "/proc/sys") -> None:
        self.root = root

    def write(self, key: str, value: str | int) -> None:
        try:
            with open(_path(self.root, key), "w") as f:
                f.write(f"{value}\n")
        except OSError as e:
            raise SysctlError(f"sysctl {key}={value}: {e.strerror or e}") from None

    def read(self, key: str) -> str:
        try:
            with open(_path(self.root, key)) as f:
                return f.read().strip()
        except OSError as e:
            raise SysctlError(f"sysctl {key}: {e.strerror or e}") from None

    def exists(self, key: str) -> bool:
        import os

        return os.path.exists(_path(self.root, key))


@dataclass
class FakeSysctl:
    """Dict-backed sysctl; ``missing`` prefixes make writes fail (like a vanished iface)."""

    values: dict[str, str] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)

    def write(self, key: str, value: str | int) -> None:
        if any(key.startswith(m) for m in self.missing):
            raise SysctlError(f"sysctl {key}={value}: No such file or directory")
        self.values[key] = str(value)

    def read(self, key: str) -> str:
        if key not in self.values:
            raise SysctlError(f"sysctl {key}: No such file or directory")
        return self.values[key]

    def exists(self, key: str) -> bool:
        return key in self.values
