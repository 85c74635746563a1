"""Entry points of the CNI plugins ``calico`` and ``calico-ipam``."""

from __future__ import annotations

import sys


def _usage(name: str) -> int:
    print(
        f"{name}: pycalico CNI plugin. Invoked by a container runtime with CNI_COMMAND and "
        "the network configuration on stdin (CNI spec 1.x).",
        file=sys.stderr,
    )
    return 0


def calico_main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        sys.exit(_usage("calico"))
    sys.exit(_usage("calico"))


def ipam_main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        sys.exit(_usage("calico-ipam"))
    sys.exit(_usage("calico-ipam"))
