"""Names of Felix's nftables objects, as Calico names them (users debug by these names).

Chains: ``cali-tw-<iface>`` / ``cali-fw-<iface>`` (to / from workload), ``cali-th-<iface>`` /
``cali-fh-<iface>`` (to / from host endpoint), ``cali-thfw-``/``cali-fhfw-<iface>`` (host
endpoint forward policy), ``raw-cali-th-``/``raw-cali-fh-<iface>`` (untracked policy),
``mangle-cali-fh-<iface>`` (pre-DNAT policy), ``cali-pi-<policy id>`` / ``cali-po-<policy
id>``, ``cali-pri-<profile>`` / ``cali-pro-<profile>``; sets ``cali40<set id>`` /
``cali60<set id>``; verdict maps ``cali-tw-dispatch`` etc.

Invariant: every name is at most :data:`MAX_NAME` characters and a valid unquoted nft
identifier; a name that would be longer (or contain other characters) becomes
``prefix + "_" + base64url(sha256(suffix))`` cut to the limit (Calico's
``GetLengthLimitedID``), so distinct inputs keep distinct names.
"""

from __future__ import annotations

import re
from base64 import urlsafe_b64encode
from hashlib import sha256

from pycalico.model import PolicyID

MAX_NAME = 28
MAX_SET_NAME = 31
_SAFE = re.compile(r"^[A-Za-z0-9_./-]*$")

POLICY_IN = "cali-pi-"
POLICY_OUT = "cali-po-"
PROFILE_IN = "cali-pri-"
PROFILE_OUT = "cali-pro-"
TO_WORKLOAD = "cali-tw-"
FROM_WORKLOAD = "cali-fw-"
TO_HOST_EP = "cali-th-"
FROM_HOST_EP = "cali-fh-"

TO_WL_DISPATCH = "cali-to-wl-dispatch"
FROM_WL_DISPATCH = "cali-from-wl-dispatch"
TO_HEP_FWD = "cali-thfw-"
FROM_HEP_FWD = "cali-fhfw-"
RAW_TO_HEP = "raw-cali-th-"
RAW_FROM_HEP = "raw-cali-fh-"
MANGLE_FROM_HEP = "mangle-cali-fh-"
# Interface key of an all-interfaces (``interfaceName: "*"``) host endpoint, as Calico.
ALL_INTERFACES = "any-interface-at-all"

TO_HEP_DISPATCH = "cali-to-host-endpoint"
FROM_HEP_DISPATCH = "cali-from-host-endpoint"
TO_HEP_FWD_DISPATCH = "cali-to-hep-forward"
FROM_HEP_FWD_DISPATCH = "cali-from-hep-forward"
RAW_TO_HEP_DISPATCH = "raw-cali-to-host-endpoint"
RAW_FROM_HEP_DISPATCH = "raw-cali-from-host-endpoint"
MANGLE_FROM_HEP_DISPATCH = "mangle-cali-from-host-ep"
WL_TO_HOST = "cali-wl-to-host"
FAILSAFE_IN = "cali-failsafe-in"
FAILSAFE_OUT = "cali-failsafe-out"
RAW_FAILSAFE_IN = "raw-cali-failsafe-in"
RAW_FAILSAFE_OUT = "raw-cali-failsafe-out"
# Verdict maps (interface name -> goto endpoint chain).
TO_WL_MAP = "cali-tw-dispatch"
FROM_WL_MAP = "cali-fw-dispatch"
TO_HEP_MAP = "cali-th-dispatch"
FROM_HEP_MAP = "cali-fh-dispatch"
TO_HEP_FWD_MAP = "cali-thfw-dispatch"
FROM_HEP_FWD_MAP = "cali-fhfw-dispatch"
RAW_TO_HEP_MAP = "raw-cali-th-dispatch"
RAW_FROM_HEP_MAP = "raw-cali-fh-dispatch"
MANGLE_FROM_HEP_MAP = "mangle-cali-fh-dispatch"


def length_limited(prefix: str, suffix: str, max_len: int = MAX_NAME) -> str:
    """``prefix + suffix`` if short and safe enough, else ``prefix_<hash of suffix>``."""
    name = prefix + suffix
    if len(name) <= max_len and _SAFE.match(suffix) and not suffix.startswith("_"):
        return name
    digest = urlsafe_b64encode(sha256(suffix.encode()).digest()).decode().rstrip("=")
    return prefix + "_" + digest[: max_len - len(prefix) - 1]


def policy_chain(pid: PolicyID, ingress: bool) -> str:
    return length_limited(POLICY_IN if ingress else POLICY_OUT, str(pid))


def profile_chain(profile: str, ingress: bool) -> str:
    return length_limited(PROFILE_IN if ingress else PROFILE_OUT, profile)


def endpoint_chain(prefix: str, iface: str) -> str:
    return length_limited(prefix, iface)


def set_name(set_prefix: str, set_id: str) -> str:
    """``cali40s-<...>`` for selector set ``s:<...>`` (``:`` is not valid in nft names)."""
    return (set_prefix + set_id.replace(":", "-"))[:MAX_SET_NAME]
