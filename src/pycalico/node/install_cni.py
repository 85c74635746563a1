"""calico-node command family: ``install-cni`` (what Calico's install-cni container does).

Installs the ``calico`` and ``calico-ipam`` CNI executables into ``--bin-dir`` and writes
``10-calico.conflist`` into ``--conf-dir``. Two layers:

- ``.calico.py`` / ``.calico-ipam.py``: tiny Python wrappers bound to *this* interpreter
  (``#!<venv python> -S`` plus an explicit ``sys.path``; skipping ``site`` saves ~10 ms).
- ``calico`` / ``calico-ipam``: when a C compiler is available (and not ``--no-shim``), the
  fast-path shim (:file:`pycalico/cni/shim.c`) forwarding each invocation to the node's
  ``calico-node cni-server`` socket and exec'ing the Python wrapper whenever the server is
  not there; otherwise the Python wrappers themselves.

Files are written to a temporary name and renamed, so a runtime never executes or parses a
half-written file. ``calico-node cni-server --socket PATH`` runs the server (in the node's
network namespace, next to Felix).

The conflist mirrors Calico's manifest: network ``k8s-pod-network``, plugin ``calico``
(``ipam: calico-ipam``, ``nodename``, ``mtu``, ``log_*``, our datastore fields) followed by
``portmap`` (``snat``, ``capabilities.portMappings``) unless ``--no-portmap``.
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

import click

from pycalico.cni.main import DEFAULT_SOCKET
from pycalico.config import DatastoreConfig
from pycalico.system.process import ProcessRunner, SubprocessRunner

ENTRY_POINTS = {"calico": "calico_main", "calico-ipam": "ipam_main"}
CONFLIST_NAME = "10-calico.conflist"


def wrapper_script(entry: str, python: str | None = None, socket_path: str = DEFAULT_SOCKET) -> str:
    """The source of an executable running ``pycalico.cni.main.<entry>()`` (which offers
    the call to the cni-server at ``socket_path`` first, unless $CALICO_CNI_SOCKET is set)."""
    import pycalico

    python = python or sys.executable
    src = str(Path(pycalico.__file__).resolve().parent.parent)
    paths = [src, sysconfig.get_paths()["purelib"]]
    return (
        f"#!{python} -S\n"
        f'"""pycalico CNI plugin wrapper (written by calico-node install-cni)."""\n'
        "import os, sys\n"
        f"sys.path[:0] = {paths!r}\n"
        f"os.environ.setdefault('CALICO_CNI_SOCKET', {socket_path!r})\n"
        f"from pycalico.cni.main import {entry}\n"
        f"{entry}()\n"
    )


def compile_shim(
    out: Path, socket_path: str, fallback_dir: str, runner: ProcessRunner | None = None
) -> bool:
    """Compile the C shim to ``out`` (atomically); False if no compiler or no source."""
    import shutil

    runner = runner or SubprocessRunner()
    src = Path(__file__).resolve().parent.parent / "cni" / "shim.c"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not src.is_file():
        return False
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    p = runner.run(
        [
            cc,
            "-O2",
            "-o",
            str(tmp),
            str(src),
            f"-DSOCKET_PATH={json.dumps(socket_path)}",
            f"-DFALLBACK_DIR={json.dumps(fallback_dir)}",
        ]
    )
    if p.returncode != 0:
        tmp.unlink(missing_ok=True)
        return False
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    return True


def _atomic_write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def cni_datastore_fields(cfg: DatastoreConfig) -> dict[str, str]:
    """The conflist's datastore fields (Calico's names) for ``cfg``: the SQLite path, or the
    etcd endpoints with the TLS files when set."""
    ds: dict[str, str] = {"datastore_type": cfg.datastore_type}
    if cfg.datastore_type == "sqlite":
        ds["datastore_path"] = cfg.datastore_path
        return ds
    ds["etcd_endpoints"] = ",".join(cfg.etcd_endpoints)
    for key in ("etcd_ca_cert_file", "etcd_cert_file", "etcd_key_file"):
        value = getattr(cfg, key)
        if value:
            ds[key] = value
    return ds


def build_conflist(
    *,
    network: str = "k8s-pod-network",
    nodename: str = "",
    mtu: int = 0,
    datastore: dict[str, str] | None = None,
    log_level: str = "info",
    log_file_path: str = "/var/log/calico/cni/cni.log",
    ipam_lock_file: str = "",
    portmap: bool = True,
    cni_version: str = "1.0.0",
) -> dict[str, Any]:
    calico: dict[str, Any] = {
        "type": "calico",
        "log_level": log_level,
        "log_file_path": log_file_path,
    }
    calico.update(datastore or {})
    if nodename:
        calico["nodename"] = nodename
    calico["mtu"] = mtu
    if ipam_lock_file:
        calico["ipam_lock_file"] = ipam_lock_file
    calico["ipam"] = {"type": "calico-ipam"}
    plugins: list[dict[str, Any]] = [calico]
    if portmap:
        plugins.append({"type": "portmap", "snat": True, "capabilities": {"portMappings": True}})
    return {"name": network, "cniVersion": cni_version, "plugins": plugins}


def install(
    bin_dir: str,
    conf_dir: str,
    conflist: dict[str, Any],
    *,
    conf_name: str = CONFLIST_NAME,
    python: str | None = None,
    shim: bool = True,
    socket_path: str = DEFAULT_SOCKET,
) -> list[Path]:
    """Write the plugin executables and the conflist; returns the paths written."""
    written: list[Path] = []
    b = Path(bin_dir).resolve()
    b.mkdir(parents=True, exist_ok=True)
    for name, entry in ENTRY_POINTS.items():
        p = b / f".{name}.py"
        _atomic_write(p, wrapper_script(entry, python, socket_path), 0o755)
        written.append(p)
        exe = b / name
        if not (shim and compile_shim(exe, socket_path, str(b))):
            _atomic_write(exe, wrapper_script(entry, python, socket_path), 0o755)
        written.append(exe)
    c = Path(conf_dir)
    c.mkdir(parents=True, exist_ok=True)
    p = c / conf_name
    _atomic_write(p, json.dumps(conflist, indent=2) + "\n", 0o644)
    written.append(p)
    return written


@click.command("install-cni")
@click.option("--bin-dir", required=True, help="Directory for the calico/calico-ipam plugins.")
@click.option("--conf-dir", required=True, help="Directory for the CNI network config.")
@click.option("--conf-name", default=CONFLIST_NAME, show_default=True)
@click.option("--network-name", default="k8s-pod-network", show_default=True)
@click.option("--nodename", default="", help="Node name (default: the plugin's hostname).")
@click.option("--mtu", default=0, type=click.IntRange(0, 65535), help="0 = /var/lib/calico/mtu")
@click.option("--log-level", default="info", show_default=True)
@click.option("--log-file-path", default="/var/log/calico/cni/cni.log", show_default=True)
@click.option("--ipam-lock-file", default="", help="IPAM host lock (default /var/run/calico)")
@click.option("--no-portmap", is_flag=True, help="Do not chain the portmap plugin.")
@click.option("--config", "config_file", default=None, help="calicoctl.cfg-style datastore file")
@click.option("--no-shim", is_flag=True, help="Install the Python plugins only (no C fast path).")
@click.option("--cni-socket", default=DEFAULT_SOCKET, show_default=True, help="cni-server socket")
def install_cni(
    bin_dir: str,
    conf_dir: str,
    conf_name: str,
    network_name: str,
    nodename: str,
    mtu: int,
    log_level: str,
    log_file_path: str,
    ipam_lock_file: str,
    no_portmap: bool,
    config_file: str | None,
    no_shim: bool,
    cni_socket: str,
) -> None:
    """Install the CNI plugins and write the Calico network config (like install-cni)."""
    from pycalico.config import ConfigError, load_config

    try:
        cfg = load_config(config_file)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    if cfg.datastore_type == "memory":
        raise click.ClickException("datastore type memory cannot be shared with CNI plugins")
    ds = cni_datastore_fields(cfg)
    conflist = build_conflist(
        network=network_name,
        nodename=nodename,
        mtu=mtu,
        datastore=ds,
        log_level=log_level,
        log_file_path=log_file_path,
        ipam_lock_file=ipam_lock_file,
        portmap=not no_portmap,
    )
    paths = install(
        bin_dir, conf_dir, conflist, conf_name=conf_name, shim=not no_shim, socket_path=cni_socket
    )
    for p in paths:
        click.echo(f"installed {p}")


@click.command("cni-server")
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True)
def cni_server(socket_path: str) -> None:
    """Serve CNI invocations forwarded by the installed shim (run in the node's netns)."""
    from pycalico.cni.server import serve

    serve(socket_path, ready=lambda: click.echo(f"cni-server listening on {socket_path}"))


COMMANDS: list[click.Command] = [install_cni, cni_server]
