"""The MTU file the CNI plugin reads (the MTU itself is the calc's:
:func:`pycalico.felix.calc.routes.host_mtu` and :func:`~pycalico.felix.calc.routes.pod_mtu`).

The file (default ``/var/lib/calico/mtu``, the path :mod:`pycalico.cni.context` reads;
``$CALICO_MTU_FILE`` overrides both) holds the pod MTU and a newline.

Invariants: :func:`write_mtu_file` writes atomically (temp file in
the same directory + rename) and only when the content changes.
"""

from __future__ import annotations

import os

DEFAULT_MTU_FILE = "/var/lib/calico/mtu"


def mtu_file_path(path: str | None = None) -> str:
    return path or os.environ.get("CALICO_MTU_FILE") or DEFAULT_MTU_FILE


def write_mtu_file(mtu: int, path: str) -> bool:
    """Write ``mtu`` to ``path`` if different; True when written."""
    text = f"{mtu}\n"
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return True


class MtuFile:
    """The MTU-file driver: ``apply(mtu)`` writes a positive MTU when it changed."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.writes = 0

    def apply(self, mtu: int) -> None:
        if self.path and mtu > 0 and write_mtu_file(mtu, self.path):
            self.writes += 1
