"""calico-node's configuration file: Calico's environment variable names, in a file.

Owns: reading ``/etc/calico/calico-node.env`` (or ``--config-file``, or
``CALICO_NODE_CONFIG``) and validating it before anything starts. Two formats, by suffix:

- ``.yaml``/``.yml``: a mapping of variable name to a scalar value;
- anything else: an env file as systemd's ``EnvironmentFile=`` reads it (``NAME=value``,
  optional ``export``, single or double quotes, ``#`` comments, blank lines).

Names are Calico's (:data:`KNOWN`), plus any ``FELIX_<FIELD>`` (FelixConfiguration
overrides, validated by the FelixConfiguration resolver at start-up). Values of a few
enumerated settings are checked here (:data:`CHOICES`); everything else is checked where it
is used (autodetection, pools, the datastore config), which raises typed errors too.

Precedence: the process environment wins over the file (so ``NAME=x calico-node run`` and
systemd ``Environment=`` lines override it). Invariant: an invalid file raises
:class:`NodeConfigError` naming the file, the line and the setting; nothing starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from pycalico.errors import CalicoError
from pycalico.model.booleans import BOOL_WORDS

DEFAULT_CONFIG_FILE = "/etc/calico/calico-node.env"
CONFIG_ENV = "CALICO_NODE_CONFIG"

#: Every setting calico-node reads, with a one-line meaning (also the docs' reference table).
KNOWN: dict[str, str] = {
    "NODENAME": "this node's name (default: the hostname)",
    "IP": "IPv4 address (or CIDR) for BGP/tunnels: an address, autodetect or none",
    "IP6": "IPv6 address (or CIDR): an address, autodetect or none",
    "IP_AUTODETECTION_METHOD": "first-found, can-reach=X, interface=RE, skip-interface=RE, cidr=C",
    "IP6_AUTODETECTION_METHOD": "as IP_AUTODETECTION_METHOD, for IPv6",
    "AS": "this node's AS number (default: the BGPConfiguration's)",
    "CALICO_NETWORKING_BACKEND": "bird (BGP), vxlan or none",
    "CLUSTER_TYPE": "recorded in ClusterInformation",
    "NO_DEFAULT_POOLS": "true: do not create the default IP pools",
    "DATASTORE_TYPE": "sqlite or etcdv3",
    "CALICO_DATASTORE_PATH": "the SQLite file",
    "ETCD_ENDPOINTS": "comma-separated etcd URLs",
    "ETCD_CA_CERT_FILE": "etcd CA certificate",
    "ETCD_CERT_FILE": "etcd client certificate",
    "ETCD_KEY_FILE": "etcd client key",
    "CALICO_NODE_STATE_DIR": "state directory (status.json, bird.cfg, sockets)",
    "CALICO_NODE_DATASTORE_GRACE_PERIOD": "datastore outage tolerated before not-ready",
    "CALICO_MTU_FILE": "where the pod MTU is written for the CNI plugin",
    "CALICO_BIRD_SOCKET": "BIRD's control socket",
    "CALICO_STARTUP_LOGLEVEL": "log level of the agent",
    "CALICO_CNI_SERVER_ENABLED": "false: no CNI fast-path server",
    "CALICO_CNI_SOCKET": "the CNI fast-path server's socket",
    "CALICO_K8S_NODE_REF": "orchestrator reference of this node",
    "CALICO_IPAM_GC_ENABLED": "false: no IPAM garbage collection",
    "CALICO_IPAM_GC_INTERVAL": "IPAM garbage collection interval",
    "CALICO_IPAM_GC_GRACE_PERIOD": "age before a leaked address is released",
    "CALICO_IPAM_GC_LEASE_DURATION": "leader lease of the IPAM collector",
    "CALICO_DNS_ENABLED": "false: no workload DNS server",
    "CALICO_DNS_LISTEN": "workload DNS listen addresses",
    "CALICO_DNS_ZONE": "workload DNS zone",
    "CALICO_DNS_NODE_ZONE": "node names zone",
    "CALICO_DNS_TTL": "record TTL",
    "CALICO_DNS_NEGATIVE_TTL": "negative answer TTL",
    "CALICO_DNS_UPSTREAMS": "upstream resolvers",
    "CALICO_DNS_UPSTREAM_TIMEOUT": "upstream timeout",
    **{
        f"CALICO_IPV{v}POOL_{k}": f"default IPv{v} pool: {k.lower().replace('_', ' ')}"
        for v in (4, 6)
        for k in ("CIDR", "BLOCK_SIZE", "NAT_OUTGOING", "NODE_SELECTOR", "VXLAN")
    },
    "CALICO_IPV4POOL_IPIP": "default IPv4 pool: ipip mode",
    "CALICO_LIBNETWORK_ENABLED": "true: serve Docker's calico/calico-ipam remote drivers",
    "CALICO_LIBNETWORK_PLUGIN_DIR": "where the driver sockets go (default /run/docker/plugins)",
    "CALICO_LIBNETWORK_CREATE_PROFILES": "create a profile per Docker network",
    "CALICO_LIBNETWORK_LABEL_ENDPOINTS": "true: copy containers' org.projectcalico.label.* labels",
    "CALICO_LIBNETWORK_LABEL_POLL_TIMEOUT": "how long to wait for a container's labels",
    "CALICO_LIBNETWORK_SCOPE": "the networks' Docker scope: local or global",
    "CALICO_LIBNETWORK_VETH_MTU": "MTU of Docker containers' veths",
    "DOCKER_HOST": "dockerd's API socket, for container labels",
}
#: Settings with a closed set of values (compared case-insensitively).
CHOICES: dict[str, tuple[str, ...]] = {
    "CALICO_NETWORKING_BACKEND": ("bird", "vxlan", "none"),
    "DATASTORE_TYPE": ("sqlite", "etcdv3", "memory"),
    "CALICO_IPV4POOL_IPIP": ("always", "crosssubnet", "never", "off"),
    "CALICO_IPV4POOL_VXLAN": ("always", "crosssubnet", "never"),
    "CALICO_IPV6POOL_VXLAN": ("always", "crosssubnet", "never"),
    "NO_DEFAULT_POOLS": BOOL_WORDS,
    "CALICO_CNI_SERVER_ENABLED": BOOL_WORDS,
    "CALICO_IPAM_GC_ENABLED": BOOL_WORDS,
    "CALICO_DNS_ENABLED": BOOL_WORDS,
    "CALICO_STARTUP_LOGLEVEL": ("debug", "info", "warning", "error", "critical"),
    "CALICO_LIBNETWORK_ENABLED": BOOL_WORDS,
    "CALICO_LIBNETWORK_SCOPE": ("local", "global"),
}
_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_MAX_BYTES = 1024 * 1024


class NodeConfigError(CalicoError, ValueError):
    """The calico-node configuration file is unreadable or invalid."""


def _unquote(raw: str, where: str) -> str:
    value = raw.strip()
    if value[:1] in ("'", '"'):
        quote = value[0]
        if len(value) < 2 or not value.endswith(quote):
            raise NodeConfigError(f"{where}: unterminated {quote} quote")
        value = value[1:-1]
        return value.replace('\\"', '"') if quote == '"' else value
    return value.split(" #", 1)[0].rstrip()


def parse_env_file(text: str, path: str) -> dict[str, tuple[str, int]]:
    """``{NAME: (value, line number)}`` of an env file; syntax errors name the line."""
    out: dict[str, tuple[str, int]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        m = _LINE.match(stripped)
        if m is None:
            raise NodeConfigError(f"{path}:{n}: expected NAME=value, got {stripped[:60]!r}")
        name, raw = m.groups()
        if name in out:
            raise NodeConfigError(f"{path}:{n}: {name} is already set on line {out[name][1]}")
        out[name] = (_unquote(raw, f"{path}:{n}: {name}"), n)
    return out


def parse_yaml(text: str, path: str) -> dict[str, tuple[str, int]]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise NodeConfigError(f"{path}: not valid YAML: {e}") from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise NodeConfigError(f"{path}: expected a mapping of setting names to values")
    out: dict[str, tuple[str, int]] = {}
    for name, value in doc.items():
        if not isinstance(name, str):
            raise NodeConfigError(f"{path}: setting names must be strings, got {name!r}")
        if isinstance(value, (dict, list)):
            raise NodeConfigError(f"{path}: {name}: expected a scalar value")
        text_value = (
            "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        )
        out[name] = (text_value, 0)
    return out


def validate(settings: Mapping[str, tuple[str, int]], path: str) -> dict[str, str]:
    """Names must be known (or ``FELIX_*``) and enumerated values allowed."""
    out: dict[str, str] = {}
    for name, (value, line) in settings.items():
        where = f"{path}:{line}" if line else path
        if name not in KNOWN and not (name.startswith("FELIX_") and len(name) > 6):
            raise NodeConfigError(f"{where}: {name}: unknown setting (see docs/reference.md)")
        allowed = CHOICES.get(name)
        if allowed is BOOL_WORDS and value and value.strip().lower() not in allowed:
            raise NodeConfigError(f"{where}: {name}: expected true or false, got {value!r}")
        if allowed and value and value.lower() not in allowed:
            raise NodeConfigError(f"{where}: {name}: {value!r} is not one of {', '.join(allowed)}")
        out[name] = value
    return out


def load(path: str) -> dict[str, str]:
    """The validated settings of ``path``."""
    p = Path(path)
    try:
        if p.stat().st_size > _MAX_BYTES:
            raise NodeConfigError(f"{path}: larger than {_MAX_BYTES} bytes")
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise NodeConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise NodeConfigError(f"{path}: cannot read: {e.strerror}") from e
    parse = parse_yaml if p.suffix in (".yaml", ".yml") else parse_env_file
    return validate(parse(text, path), path)


def effective_env(environ: Mapping[str, str], config_file: str | None) -> dict[str, str]:
    """The environment calico-node runs with: the file's settings under ``environ``.

    ``config_file`` None means ``CALICO_NODE_CONFIG`` or, when it exists, the default
    file; an explicitly named file must exist."""
    path = config_file or environ.get(CONFIG_ENV)
    if not path:
        if not Path(DEFAULT_CONFIG_FILE).is_file():
            return dict(environ)
        path = DEFAULT_CONFIG_FILE
    return {**load(path), **environ}
