"""One CNI invocation, start to finish: the only place CNI errors become error JSON.

:func:`run` validates ``CNI_*`` and the network config, dispatches the command and returns the
exit status and stdout (the result rendered for the config's ``cniVersion``, or the spec's
error JSON). Used by the exec'd plugins (:mod:`pycalico.cni.main`) and by the node's CNI
server (:mod:`pycalico.cni.server`).

Start-up cost matters: this module imports only the protocol layer; the datastore, IPAM and
dataplane modules are imported by the commands that need them (VERSION touches none).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pycalico.cni.errors import (
    INCOMPATIBLE_VERSION,
    INTERNAL,
    INVALID_NETNS,
    CniError,
)
from pycalico.cni.types import (
    SUPPORTED_VERSIONS,
    NetConf,
    decode_json,
    parse_env,
    parse_netconf,
    render_result,
    version_result,
    version_tuple,
)

if TYPE_CHECKING:
    from pycalico.cni.context import Deps

PLUGIN_CALICO = "calico"
PLUGIN_IPAM = "calico-ipam"
LATEST = SUPPORTED_VERSIONS[-1]
_MIN_VERSION = {"CHECK": (0, 4, 0), "GC": (1, 1, 0), "STATUS": (1, 1, 0)}


def _guess_version(stdin: bytes) -> str:
    try:
        v = decode_json(stdin).get("cniVersion")
    except CniError:
        return LATEST
    return v if isinstance(v, str) and v in SUPPORTED_VERSIONS else LATEST


def _log(conf: NetConf | None, line: str) -> None:
    if conf is None or not conf.log_file_path or conf.log_level == "none":
        return
    try:
        os.makedirs(os.path.dirname(conf.log_file_path) or ".", exist_ok=True)
        with open(conf.log_file_path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{os.getpid()}] {line}\n")
    except OSError:
        pass


def run(
    plugin: str,
    environ: Mapping[str, str],
    stdin: bytes,
    deps: Callable[[], Deps] | None = None,
    *,
    close_datastore: bool = False,
) -> tuple[int, str]:
    """Run one invocation; returns (exit status, stdout text). Never raises.

    ``close_datastore``: close the datastore afterwards (long-lived callers: the CNI server).
    """
    import json

    conf: NetConf | None = None
    version = _guess_version(stdin)
    try:
        env = parse_env(environ)
        if env.command == "VERSION":
            return 0, json.dumps(version_result(version))
        conf = parse_netconf(stdin, require_ipam=plugin == PLUGIN_CALICO)
        version = conf.cni_version
        need = _MIN_VERSION.get(env.command)
        if need and version_tuple(conf.cni_version) < need:
            raise CniError(
                INCOMPATIBLE_VERSION,
                f"config version does not allow {env.command}",
                f"cniVersion {conf.cni_version} < {'.'.join(map(str, need))}",
            )
        if env.command in ("ADD", "DEL", "CHECK") and env.netns:
            from pycalico.system.netns import same_as_current

            if same_as_current(env.netns):
                raise CniError(INVALID_NETNS, "invalid netns", f"{env.netns} is the plugin's own")
        from pycalico.cni.context import Invocation, default_deps

        d = deps() if deps is not None else default_deps(environ)
        inv = Invocation(env=env, conf=conf, stdin=stdin, deps=d)
        # The datastore is deliberately not closed here: the process exits right after and
        # committed writes are durable (sqlite WAL / etcd), while a close costs ~10 ms
        # (WAL checkpoint). In-process callers (tests) own their datastore.
        try:
            out = _dispatch(plugin, inv)
        finally:
            if close_datastore:
                inv.close()
        _log(conf, f"{plugin} {env.command} {env.container_id} ok")
        if out is None:
            return 0, ""
        return 0, json.dumps(render_result(out, conf.cni_version))
    except CniError as e:
        _log(conf, f"{plugin} error {e.code}: {e}")
        return 1, json.dumps(e.to_json(version))
    except Exception as e:  # the edge: anything unexpected becomes error 999
        import traceback

        _log(conf, f"{plugin} internal error: {traceback.format_exc()}")
        err = CniError(INTERNAL, f"internal error: {type(e).__name__}", str(e))
        return 1, json.dumps(err.to_json(version))


def _dispatch(plugin: str, inv: Any) -> dict[str, Any] | None:
    cmd = inv.env.command
    if plugin == PLUGIN_IPAM:
        from pycalico.cni import ipam_plugin as ip

        if cmd == "ADD":
            return ip.ipam_result(ip.ipam_add(inv, inv.nodename()))
        if cmd == "DEL":
            ip.ipam_release(inv)
        elif cmd == "CHECK":
            _ipam_check(inv)
        elif cmd == "GC":
            ip.ipam_gc(inv)
        elif cmd == "STATUS":
            ip.datastore_status(inv)
        return None
    from pycalico.cni import plugin as p

    if cmd == "ADD":
        return p.cmd_add(inv)
    if cmd == "DEL":
        p.cmd_del(inv)
    elif cmd == "CHECK":
        p.cmd_check(inv)
    elif cmd == "GC":
        p.cmd_gc(inv)
    elif cmd == "STATUS":
        p.cmd_status(inv)
    return None


def _ipam_check(inv: Any) -> None:
    from pycalico.cni import ipam_plugin as ip
    from pycalico.cni.errors import IPAM_FAILED
    from pycalico.cni.types import normalize_result

    held = set(ip.ipam_held(inv))
    want = {
        ip.host_prefix(x["address"]) for x in normalize_result(inv.conf.prev_result or {})["ips"]
    }
    if not held or not want <= held:
        raise CniError(
            IPAM_FAILED, "CHECK failed", f"handle holds {sorted(held)}, want {sorted(want)}"
        )
