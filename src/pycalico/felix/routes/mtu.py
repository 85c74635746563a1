"""MTU auto-detection and the MTU file the CNI plugin reads.

Host MTU = the smallest MTU of the *up* interfaces whose name matches Calico's
``mtuIfacePattern`` (fallback 1460 when none match); the pod MTU is the smallest MTU of the
enabled encapsulations (IPIP host-20, VXLAN host-50) or the host MTU (see
:func:`pycalico.felix.calc.routes.pod_mtu`). The file (default ``/var/lib/calico/mtu``, the
path :mod:`pycalico.cni.context` reads; ``$CALICO_MTU_FILE`` overrides both) holds the number
and a newline.

Invariants: :func:`host_mtu` is pure over ``ip -j link show`` records; :func:`write_mtu_file`
writes atomically (temp file + rename) and only when the content changes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pycalico.felix.calc.routetypes import FALLBACK_HOST_MTU

DEFAULT_MTU_FILE = "/var/lib/calico/mtu"


def host_mtu(links: Iterable[Mapping[str, Any]], pattern: str) -> int:
    """Smallest MTU of up links (``ip -j link show`` records) whose name matches ``pattern``."""
    rx = re.compile(pattern)
    mtus = []
    for link in links:
        name = str(link.get("ifname", ""))
        up = "UP" in (link.get("flags") or []) or link.get("operstate") == "UP"
        if up and rx.search(name) and int(link.get("mtu") or 0) > 0:
            mtus.append(int(link["mtu"]))
    return min(mtus) if mtus else FALLBACK_HOST_MTU


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
