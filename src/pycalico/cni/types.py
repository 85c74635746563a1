"""CNI protocol layer: environment, network configuration, versions and results.

Pure and import-light (json + dataclasses only): the plugin's start-up time depends on it.

Invariants:
- :func:`parse_env` enforces the reference ``skel`` rules (code 4 naming every missing or
  invalid variable); :func:`parse_netconf` returns a validated :class:`NetConf` or raises a
  :class:`CniError` (6 undecodable, 7 invalid, 1 unsupported version) naming the field.
- Unknown netconf fields are kept (``raw``) and passed through to delegated plugins.
- Results are built in 1.1.0 shape and rendered for the requested version by
  :func:`render_result` (0.3.x/0.4.0 add ``ips[].version``; 1.0.0 drops 1.1-only keys).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.cni.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_ENV,
    INVALID_NETCONF,
    CniError,
)

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_VER_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
DATASTORE_TYPES = ("sqlite", "etcdv3", "memory")
LOG_LEVELS = ("debug", "info", "warning", "warn", "error", "fatal", "panic", "none")


def version_tuple(v: str) -> tuple[int, int, int]:
    m = _VER_RE.match(v)
    if not m:
        raise CniError(DECODE_FAILURE, "failed to decode version", f"invalid version {v!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def version_result(cni_version: str) -> dict[str, Any]:
    return {"cniVersion": cni_version, "supportedVersions": list(SUPPORTED_VERSIONS)}


# -- environment ------------------------------------------------------------------------
@dataclass(frozen=True)
class CniEnv:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: dict[str, str] = field(default_factory=dict)
    path: tuple[str, ...] = ()


def parse_cni_args(text: str) -> dict[str, str]:
    """``K=V;K2=V2`` -> dict. A pair without ``=`` is invalid (code 4)."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        k, sep, v = part.partition("=")
        if not sep or not k.strip():
            raise CniError(INVALID_ENV, "invalid CNI_ARGS", f"pair {part!r} is not KEY=VALUE")
        out[k.strip()] = v.strip()
    return out


def _ifname_problem(name: str) -> str | None:
    if not name:
        return "is empty"
    if len(name) > 15:
        return f"{name!r} is longer than 15 characters"
    if name in (".", ".."):
        return f"{name!r} is not a valid interface name"
    if any(c in name for c in "/:") or any(c.isspace() for c in name):
        return f"{name!r} contains '/', ':' or whitespace"
    return None


def parse_env(environ: Mapping[str, str]) -> CniEnv:
    """Validate the CNI_* variables like the reference ``skel`` (error code 4)."""
    cmd = environ.get("CNI_COMMAND", "")
    if not cmd:
        raise CniError(INVALID_ENV, "required env variables [CNI_COMMAND] missing")
    if cmd not in COMMANDS:
        raise CniError(INVALID_ENV, f"unknown CNI_COMMAND: {cmd}")
    if cmd == "VERSION":
        return CniEnv(cmd)
    need: list[str] = []
    if cmd in ("ADD", "DEL", "CHECK"):
        need += ["CNI_CONTAINERID", "CNI_IFNAME"]
    if cmd in ("ADD", "CHECK"):
        need.append("CNI_NETNS")
    if cmd in ("ADD", "DEL", "CHECK", "GC"):
        need.append("CNI_PATH")
    missing = [v for v in need if not environ.get(v)]
    if missing:
        raise CniError(INVALID_ENV, f"required env variables [{','.join(missing)}] missing")
    cid = environ.get("CNI_CONTAINERID", "")
    if cid and not _ID_RE.match(cid):
        raise CniError(
            INVALID_ENV,
            "invalid CNI_CONTAINERID",
            f"{cid!r} must match {_ID_RE.pattern}",
        )
    ifname = environ.get("CNI_IFNAME", "")
    if cmd in ("ADD", "DEL", "CHECK"):
        problem = _ifname_problem(ifname)
        if problem:
            raise CniError(INVALID_ENV, "invalid CNI_IFNAME", f"CNI_IFNAME {problem}")
    path = tuple(p for p in environ.get("CNI_PATH", "").split(":") if p)
    return CniEnv(
        command=cmd,
        container_id=cid,
        netns=environ.get("CNI_NETNS", ""),
        ifname=ifname,
        args=parse_cni_args(environ.get("CNI_ARGS", "")),
        path=path,
    )


# -- network configuration ----------------------------------------------------------------
@dataclass(frozen=True)
class IpamConf:
    type: str
    assign_ipv4: bool = True
    assign_ipv6: bool = False
    ipv4_pools: tuple[str, ...] = ()
    ipv6_pools: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetConf:
    cni_version: str
    name: str
    type: str
    ipam: IpamConf | None
    mtu: int = 0
    nodename: str = ""
    nodename_file: str = ""
    datastore_type: str = ""
    datastore_path: str = ""
    etcd_endpoints: str = ""
    etcd_ca_cert_file: str = ""
    etcd_cert_file: str = ""
    etcd_key_file: str = ""
    log_level: str = ""
    log_file_path: str = ""
    policy_type: str = ""
    include_default_routes: bool = True
    prev_result: dict[str, Any] | None = None
    runtime_config: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> tuple[int, int, int]:
        return version_tuple(self.cni_version)


def _bad(fld: str, why: str) -> CniError:
    return CniError(INVALID_NETCONF, "invalid network config", f"{fld}: {why}")


def _str(d: Mapping[str, Any], key: str, prefix: str = "") -> str:
    v = d.get(key, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise _bad(prefix + key, f"expected a string, got {json.dumps(v)}")
    return v


def _bool(d: Mapping[str, Any], key: str, default: bool, prefix: str = "") -> bool:
    v = d.get(key)
    if v is None or v == "":
        return default
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise _bad(prefix + key, f'expected "true" or "false", got {json.dumps(v)}')


def _str_list(d: Mapping[str, Any], key: str, prefix: str = "") -> tuple[str, ...]:
    v = d.get(key)
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise _bad(prefix + key, "expected a list of non-empty strings")
    return tuple(v)


def _obj(d: Mapping[str, Any], key: str) -> dict[str, Any]:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _bad(key, "expected an object")
    return v


def decode_json(data: bytes | str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CniError(DECODE_FAILURE, "failed to decode network config", str(e)) from None
    except RecursionError:  # e.g. 100k '[': json's C decoder recurses per level
        raise CniError(
            DECODE_FAILURE, "failed to decode network config", "nested too deeply"
        ) from None
    if not isinstance(doc, dict):
        raise CniError(DECODE_FAILURE, "failed to decode network config", "not a JSON object")
    return doc


def check_version(v: str) -> None:
    version_tuple(v)
    if v not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f'config is "{v}", plugin supports {list(SUPPORTED_VERSIONS)}',
        )


def parse_netconf(data: bytes | str, *, require_ipam: bool = True) -> NetConf:
    """Decode + validate a per-invocation network config (stdin)."""
    doc = decode_json(data)
    cni_version = doc.get("cniVersion") or "0.1.0"
    if not isinstance(cni_version, str):
        raise CniError(
            DECODE_FAILURE, "failed to decode network config", "cniVersion: not a string"
        )
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise CniError(INVALID_NETCONF, "missing network name")
    if not _ID_RE.match(name):
        raise _bad("name", f"{name!r} must match {_ID_RE.pattern}")
    check_version(cni_version)
    typ = _str(doc, "type")
    ipam: IpamConf | None = None
    ipam_raw = doc.get("ipam")
    if ipam_raw is not None:
        if not isinstance(ipam_raw, dict):
            raise _bad("ipam", "expected an object")
        ityp = _str(ipam_raw, "type", "ipam.")
        if not ityp:
            raise _bad("ipam.type", "required")
        ipam = IpamConf(
            type=ityp,
            assign_ipv4=_bool(ipam_raw, "assign_ipv4", True, "ipam."),
            assign_ipv6=_bool(ipam_raw, "assign_ipv6", False, "ipam."),
            ipv4_pools=_str_list(ipam_raw, "ipv4_pools", "ipam."),
            ipv6_pools=_str_list(ipam_raw, "ipv6_pools", "ipam."),
        )
        if not ipam.assign_ipv4 and not ipam.assign_ipv6:
            raise _bad("ipam", "assign_ipv4 and assign_ipv6 are both false: nothing to assign")
    elif require_ipam:
        raise _bad("ipam", 'required (e.g. {"type": "calico-ipam"})')
    mtu = doc.get("mtu", 0)
    if mtu is None:
        mtu = 0
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not (mtu == 0 or 68 <= mtu <= 65535):
        raise _bad("mtu", f"expected an integer 68..65535 (or 0 for auto), got {json.dumps(mtu)}")
    ds_type = _str(doc, "datastore_type").lower()
    if ds_type and ds_type not in DATASTORE_TYPES:
        raise _bad("datastore_type", f"{ds_type!r}: must be one of {', '.join(DATASTORE_TYPES)}")
    eps = doc.get("etcd_endpoints", "")
    if isinstance(eps, list) and all(isinstance(e, str) for e in eps):
        eps = ",".join(eps)
    if not isinstance(eps, str):
        raise _bad("etcd_endpoints", "expected a comma-separated string")
    level = _str(doc, "log_level").lower()
    if level and level not in LOG_LEVELS:
        raise _bad("log_level", f"{level!r}: must be one of {', '.join(LOG_LEVELS)}")
    policy = _obj(doc, "policy")
    prev = doc.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise _bad("prevResult", "expected an object")
    return NetConf(
        cni_version=cni_version,
        name=name,
        type=typ,
        ipam=ipam,
        mtu=mtu,
        nodename=_str(doc, "nodename"),
        nodename_file=_str(doc, "nodename_file"),
        datastore_type=ds_type,
        datastore_path=_str(doc, "datastore_path"),
        etcd_endpoints=eps,
        etcd_ca_cert_file=_str(doc, "etcd_ca_cert_file"),
        etcd_cert_file=_str(doc, "etcd_cert_file"),
        etcd_key_file=_str(doc, "etcd_key_file"),
        log_level=level,
        log_file_path=_str(doc, "log_file_path"),
        policy_type=_str(policy, "type"),
        include_default_routes=_bool(doc, "include_default_routes", True),
        prev_result=prev,
        runtime_config=_obj(doc, "runtimeConfig"),
        args=_obj(doc, "args"),
        raw=doc,
    )


def cni_labels(conf: NetConf) -> dict[str, str]:
    """Labels from ``args.cni.labels`` (CNI conventions: ``[{"key":..,"value":..}]``)."""
    return _cni_pairs(conf, "labels")


def cni_annotations(conf: NetConf) -> dict[str, str]:
    """Pod annotations from ``args.cni.annotations`` (pycalico's, in the form of
    ``args.cni.labels``): what Calico reads from the Kubernetes pod, e.g. the
    ``qos.projectcalico.org/*`` QoS controls."""
    return _cni_pairs(conf, "annotations")


def _cni_pairs(conf: NetConf, what: str) -> dict[str, str]:
    cni = conf.args.get("cni")
    pairs = cni.get(what) if isinstance(cni, dict) else None
    out: dict[str, str] = {}
    if pairs is None:
        return out
    if not isinstance(pairs, list):
        raise _bad(f"args.cni.{what}", "expected a list of {key, value}")
    for item in pairs:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("key"), str)
            or not isinstance(item.get("value", ""), str)
        ):
            raise _bad(f"args.cni.{what}", f"bad entry {json.dumps(item)}")
        out[item["key"]] = item.get("value", "")
    return out


# -- results ----------------------------------------------------------------------------
_V11_IFACE = ("mtu", "socketPath", "pciID")
_V11_ROUTE = ("mtu", "advmss", "priority", "table", "scope")


def render_result(result: Mapping[str, Any], cni_version: str) -> dict[str, Any]:
    """Convert a 1.1-shaped result dict into ``cni_version``'s shape."""
    v = version_tuple(cni_version)
    out: dict[str, Any] = {"cniVersion": cni_version}
    ifaces = [dict(i) for i in result.get("interfaces", [])]
    ips = [dict(i) for i in result.get("ips", [])]
    routes = [dict(r) for r in result.get("routes", [])]
    if v < (1, 1, 0):
        for i in ifaces:
            for k in _V11_IFACE:
                i.pop(k, None)
        for r in routes:
            for k in _V11_ROUTE:
                r.pop(k, None)
    if v < (1, 0, 0):
        for ip in ips:
            ip["version"] = "6" if ":" in ip["address"] else "4"
    else:
        for ip in ips:
            ip.pop("version", None)
    if ifaces:
        out["interfaces"] = ifaces
    out["ips"] = ips
    if routes:
        out["routes"] = routes
    out["dns"] = dict(result.get("dns") or {})
    return out


def normalize_result(prev: Mapping[str, Any]) -> dict[str, Any]:
    """A result of any supported version (e.g. a prevResult) in 1.1 shape."""
    ips = []
    for ip in prev.get("ips", []) or []:
        if isinstance(ip, dict) and isinstance(ip.get("address"), str):
            d = {k: v for k, v in ip.items() if k != "version"}
            ips.append(d)
    return {
        "interfaces": [dict(i) for i in prev.get("interfaces", []) or [] if isinstance(i, dict)],
        "ips": ips,
        "routes": [dict(r) for r in prev.get("routes", []) or [] if isinstance(r, dict)],
        "dns": dict(prev.get("dns") or {}),
    }
