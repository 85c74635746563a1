"""Datastore configuration shared by every command: flags > environment > config file.

Mirrors Calico's client configuration: ``DATASTORE_TYPE`` (``sqlite`` default, ``etcdv3``,
``memory`` for tests), ``CALICO_DATASTORE_PATH`` (the sqlite file), ``ETCD_ENDPOINTS``
(comma-separated URLs), ``ETCD_CA_CERT_FILE`` / ``ETCD_CERT_FILE`` / ``ETCD_KEY_FILE``, or a
calicoctl.cfg-style YAML file (``--config FILE``; ``/etc/calico/calicoctl.cfg`` when present)::

    apiVersion: projectcalico.org/v3
    kind: CalicoAPIConfig
    metadata: {}
    spec: {datastoreType: etcdv3, etcdEndpoints: "http://127.0.0.1:2379", ...}

Invariants: a :class:`DatastoreConfig` is immutable and already validated; every problem is
a :class:`ConfigError` naming the offending field/variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycalico.errors import CalicoError

DATASTORE_TYPES = ("sqlite", "etcdv3", "memory")
DEFAULT_DATASTORE_PATH = "/var/lib/calico/calico.db"
DEFAULT_CONFIG_FILE = "/etc/calico/calicoctl.cfg"
DEFAULT_ETCD_ENDPOINTS = ("http://127.0.0.1:2379",)

# setting name -> (env var, calicoctl.cfg spec field)
_SOURCES: dict[str, tuple[str, str]] = {
    "datastore_type": ("DATASTORE_TYPE", "datastoreType"),
    "datastore_path": ("CALICO_DATASTORE_PATH", "datastorePath"),
    "etcd_endpoints": ("ETCD_ENDPOINTS", "etcdEndpoints"),
    "etcd_ca_cert_file": ("ETCD_CA_CERT_FILE", "etcdCACertFile"),
    "etcd_cert_file": ("ETCD_CERT_FILE", "etcdCertFile"),
    "etcd_key_file": ("ETCD_KEY_FILE", "etcdKeyFile"),
}


class ConfigError(CalicoError, ValueError):
    """Invalid or unreadable datastore configuration."""


@dataclass(frozen=True)
class DatastoreConfig:
    datastore_type: str = "sqlite"
    datastore_path: str = DEFAULT_DATASTORE_PATH
    etcd_endpoints: tuple[str, ...] = DEFAULT_ETCD_ENDPOINTS
    etcd_ca_cert_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_key_file: str | None = None
    source: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    """Where each setting came from (``flag``, ``env``, ``file:<path>``, ``default``)."""

    def __post_init__(self) -> None:
        if self.datastore_type not in DATASTORE_TYPES:
            raise ConfigError(
                f"datastoreType {self.datastore_type!r}: must be one of "
                + ", ".join(DATASTORE_TYPES)
            )
        if self.datastore_type == "sqlite" and not self.datastore_path:
            raise ConfigError("datastorePath: required for the sqlite datastore")
        if self.datastore_type == "etcdv3":
            if not self.etcd_endpoints:
                raise ConfigError("etcdEndpoints: at least one endpoint is required")
            for ep in self.etcd_endpoints:
                if not ep.startswith(("http://", "https://")):
                    raise ConfigError(
                        f"etcdEndpoints: {ep!r} must be a URL starting http:// or https://"
                    )
            if bool(self.etcd_cert_file) != bool(self.etcd_key_file):
                raise ConfigError("etcdCertFile and etcdKeyFile must be given together")


def _split_endpoints(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    elif isinstance(value, list):
        parts = [str(p).strip() for p in value]
    else:
        raise ConfigError(f"{what}: expected a comma-separated string or a list")
    return tuple(p for p in parts if p)


def read_config_file(path: str) -> dict[str, Any]:
    """The ``spec`` of a calicoctl.cfg-style file, mapped to setting names."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read: {e.strerror or e}") from None
    import yaml  # lazily: most commands never read a config file

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: invalid YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path}: expected a mapping at top level")
    kind = doc.get("kind", "CalicoAPIConfig")
    if kind != "CalicoAPIConfig":
        raise ConfigError(f"config file {path}: kind {kind!r}: expected CalicoAPIConfig")
    api = doc.get("apiVersion", "projectcalico.org/v3")
    if api not in ("projectcalico.org/v3", "v1"):
        raise ConfigError(f"config file {path}: apiVersion {api!r}: expected projectcalico.org/v3")
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"config file {path}: spec: expected a mapping")
    by_field = {f: name for name, (_, f) in _SOURCES.items()}
    out: dict[str, Any] = {}
    for k, v in spec.items():
        if k not in by_field:
            raise ConfigError(
                f"config file {path}: spec.{k}: unknown field (known: {', '.join(by_field)})"
            )
        if v is None or v == "":
            continue
        out[by_field[k]] = v
    return out


def load_config(
    config_file: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> DatastoreConfig:
    """Resolve settings: ``flags`` (setting name -> value; None = unset) > ``env`` >
    ``config_file`` (or ``/etc/calico/calicoctl.cfg`` when it exists) > defaults."""
    env = os.environ if env is None else env
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if flags:
        layers.append(("flag", {k: v for k, v in flags.items() if v not in (None, "")}))
    env_values = {name: env[var] for name, (var, _) in _SOURCES.items() if env.get(var)}
    layers.append(("env", env_values))
    path = config_file
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        layers.append((f"file:{path}", read_config_file(path)))
    for layer_name, layer in layers:
        unknown = set(layer) - set(_SOURCES)
        if unknown:
            raise ConfigError(f"unknown setting(s) from {layer_name}: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for name in _SOURCES:
        for layer_name, layer in layers:
            if name in layer:
                values[name] = layer[name]
                source[name] = layer_name
                break
        else:
            source[name] = "default"
    if "etcd_endpoints" in values:
        var, fld = _SOURCES["etcd_endpoints"]
        values["etcd_endpoints"] = _split_endpoints(
            values["etcd_endpoints"], var if source["etcd_endpoints"] == "env" else fld
        )
    for name, v in values.items():
        if name != "etcd_endpoints" and not isinstance(v, str):
            raise ConfigError(f"{_SOURCES[name][1]}: expected a string, got {v!r}")
    if "datastore_type" in values:
        values["datastore_type"] = values["datastore_type"].strip().lower()
    return DatastoreConfig(**values, source=source)
