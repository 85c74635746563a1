"""CNI error model: :class:`CniError` carries a spec error code; only the plugin edge
(:mod:`pycalico.cni.runner`) turns it into the error JSON on stdout and exit status 1.

Codes (CNI spec 1.x): 1 incompatible version, 2 unsupported field, 3 unknown container,
4 invalid environment, 5 I/O failure, 6 decode failure, 7 invalid network config,
8 invalid netns (libcni), 11 try again later, 50/51 plugin not available (STATUS),
100+ plugin specific (we use 100 for wiring failures, 101 for datastore failures,
102 for IPAM failures such as an exhausted pool), 999 internal.
"""

from __future__ import annotations

from typing import Any

from pycalico.errors import CalicoError

INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETCONF = 7
INVALID_NETNS = 8
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
WIRING_FAILED = 100
DATASTORE_FAILED = 101
IPAM_FAILED = 102
INTERNAL = 999


class CniError(CalicoError):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out
