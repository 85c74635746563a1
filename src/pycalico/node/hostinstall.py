"""calico-node command ``install``: lay pycalico down on a host (no checkout needed).

Owns: the systemd unit (:func:`unit_text`), the settings file template
(:data:`CONFIG_TEMPLATE`), and the order of installation: settings file (only when
missing: an operator's file is never overwritten), then the CNI plugins and network config
(:func:`pycalico.node.install_cni.install`, using the datastore named in the settings), then
the unit. ``--root`` installs under a staging root (as ``DESTDIR`` does), which is how the
tests and packagers use it.

The unit runs ``calico-node run`` in the foreground (logs to stderr, hence the journal),
after the network and etcd, restarting it on failure. ``KillMode=process``: stopping or
restarting the agent leaves BIRD and the programmed dataplane in place, so a restart never
withdraws routes of running workloads (the next agent adopts BIRD and resyncs). Reload is
SIGHUP (a full dataplane resync). The agent needs root's network capabilities.

Invariant: every file is written to a temporary name and renamed; the settings file is
0600 (it may name etcd credentials).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

UNIT_NAME = "calico-node.service"

CONFIG_TEMPLATE = """\
# pycalico calico-node settings: Calico's environment variable names (see docs/reference.md).
# The process environment wins over this file. Check it with: calico-node check-config
#
# NODENAME=host-1                     # default: the hostname
# IP=autodetect                       # or an address/CIDR, or none
# IP_AUTODETECTION_METHOD=first-found # can-reach=DEST, interface=RE, cidr=CIDR, ...
# CALICO_NETWORKING_BACKEND=bird      # bird (BGP), vxlan or none
DATASTORE_TYPE=sqlite
CALICO_DATASTORE_PATH=/var/lib/calico/calico.db
# For a shared datastore across hosts use etcd:
# DATASTORE_TYPE=etcdv3
# ETCD_ENDPOINTS=https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379
# ETCD_CA_CERT_FILE=/etc/calico/etcd-ca.pem
# ETCD_CERT_FILE=/etc/calico/etcd-cert.pem
# ETCD_KEY_FILE=/etc/calico/etcd-key.pem
# CALICO_IPV4POOL_CIDR=192.168.0.0/16
"""

CAPABILITIES = ("CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN",
                "CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE", "CAP_CHOWN", "CAP_FOWNER", "CAP_KILL",
                "CAP_SETUID", "CAP_SETGID")  # fmt: skip


def unit_text(executable: str, config_file: str) -> str:
    """The systemd unit running ``executable run`` with ``config_file``."""
    caps = " ".join(CAPABILITIES)
    return f"""\
[Unit]
Description=pycalico calico-node (Felix, BIRD, workload DNS)
Wants=network-online.target
After=network-online.target etcd.service

[Service]
Type=simple
Environment=CALICO_NODE_CONFIG={config_file}
ExecStartPre={executable} check-config --config-file {config_file}
ExecStart={executable} run
ExecReload=/bin/kill -HUP $MAINPID
KillMode=process
Restart=always
RestartSec=5
TimeoutStopSec=30
CapabilityBoundingSet={caps}
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _under(root: str, path: str) -> Path:
    return Path(root) / path.lstrip("/") if root not in ("", "/") else Path(path)


def default_executable() -> str:
    """The ``calico-node`` console script next to this interpreter (a venv's bin)."""
    here = Path(sys.executable).parent / "calico-node"
    return str(here) if here.exists() else (shutil.which("calico-node") or str(here))


@click.command("install")
@click.option("--root", default="/", show_default=True, help="Install under this root.")
@click.option("--config-file", default="/etc/calico/calico-node.env", show_default=True)
@click.option("--unit-dir", default="/etc/systemd/system", show_default=True)
@click.option("--cni-bin-dir", default="/opt/cni/bin", show_default=True)
@click.option("--cni-conf-dir", default="/etc/cni/net.d", show_default=True)
@click.option("--no-cni", is_flag=True, help="Do not install the CNI plugins.")
@click.option("--executable", default=None, help="calico-node path for the unit "
              "[default: the one next to this Python].")  # fmt: skip
def install_host(
    root: str,
    config_file: str,
    unit_dir: str,
    cni_bin_dir: str,
    cni_conf_dir: str,
    no_cni: bool,
    executable: str | None,
) -> None:
    """Install the settings file, the CNI plugins and the systemd unit on this host."""
    from pycalico.config import ConfigError, load_config
    from pycalico.node.envfile import NodeConfigError, load
    from pycalico.node.install_cni import build_conflist, cni_datastore_fields, install

    cfg_path = _under(root, config_file)
    if cfg_path.exists():
        click.echo(f"kept {cfg_path} (existing settings are never overwritten)")
    else:
        _write(cfg_path, CONFIG_TEMPLATE, 0o600)
        click.echo(f"installed {cfg_path}")
    try:
        settings = load(str(cfg_path))
        ds_cfg = load_config(env=settings)
    except (NodeConfigError, ConfigError) as e:
        raise click.ClickException(f"invalid settings: {e}") from None
    if not no_cni:
        ds = cni_datastore_fields(ds_cfg)
        conflist = build_conflist(datastore=ds, nodename=settings.get("NODENAME", ""))
        for p in install(str(_under(root, cni_bin_dir)), str(_under(root, cni_conf_dir)), conflist):
            click.echo(f"installed {p}")
    unit = _under(root, unit_dir) / UNIT_NAME
    _write(unit, unit_text(executable or default_executable(), config_file), 0o644)
    click.echo(f"installed {unit}")
    click.echo("next: systemctl daemon-reload && systemctl enable --now calico-node")


COMMANDS: list[click.Command] = [install_host]
