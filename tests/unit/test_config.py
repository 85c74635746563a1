"""DatastoreConfig resolution: flags > env > file > defaults, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycalico.config import ConfigError, DatastoreConfig, load_config, read_config_file
from pycalico.datastore import open_datastore
from pycalico.datastore.memory import MemoryDatastore
from pycalico.datastore.sqlite import SqliteDatastore

CFG = """\
apiVersion: projectcalico.org/v3
kind: CalicoAPIConfig
metadata: {}
spec:
  datastoreType: etcdv3
  etcdEndpoints: "http://10.0.0.1:2379, http://10.0.0.2:2379"
  etcdCACertFile: /f/ca.pem
  etcdCertFile: /f/cert.pem
  etcdKeyFile: /f/key.pem
"""


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "calicoctl.cfg"
    p.write_text(text)
    return str(p)


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), env={})
    assert cfg.datastore_type == "sqlite"
    assert cfg.datastore_path == "/var/lib/calico/calico.db"
    assert cfg.source["datastore_type"] == "default"


def test_file(tmp_path: Path) -> None:
    path = write(tmp_path, CFG)
    cfg = load_config(path, env={})
    assert cfg.datastore_type == "etcdv3"
    assert cfg.etcd_endpoints == ("http://10.0.0.1:2379", "http://10.0.0.2:2379")
    assert (cfg.etcd_ca_cert_file, cfg.etcd_cert_file, cfg.etcd_key_file) == (
        "/f/ca.pem",
        "/f/cert.pem",
        "/f/key.pem",
    )
    assert cfg.source["etcd_endpoints"] == f"file:{path}"


def test_env_over_file_and_flags_over_env(tmp_path: Path) -> None:
    path = write(tmp_path, CFG)
    env = {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": "/tmp/x.db"}
    cfg = load_config(path, env=env)
    assert cfg.datastore_type == "sqlite" and cfg.datastore_path == "/tmp/x.db"
    assert cfg.etcd_ca_cert_file == "/f/ca.pem"  # untouched settings still come from the file
    cfg = load_config(path, env=env, flags={"datastore_path": "/tmp/y.db", "etcd_key_file": None})
    assert cfg.datastore_path == "/tmp/y.db"
    assert cfg.source["datastore_path"] == "flag"
    env2 = {"ETCD_ENDPOINTS": "https://1.2.3.4:2379", "ETCD_KEY_FILE": "/e/k"}
    cfg = load_config(path, env=env2)
    assert cfg.etcd_endpoints == ("https://1.2.3.4:2379",)
    assert cfg.etcd_key_file == "/e/k"


def test_endpoints_list_in_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kind: CalicoAPIConfig\nspec:\n  datastoreType: etcdv3\n"
        "  etcdEndpoints: [http://a:1, http://b:2]\n",
    )
    assert load_config(path, env={}).etcd_endpoints == ("http://a:1", "http://b:2")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("kind: Other\n", "kind 'Other'"),
        ("spec:\n  datastoreType: kubernetes\n", "datastoreType 'kubernetes'"),
        ("spec:\n  bogus: 1\n", r"spec\.bogus: unknown field"),
        ("spec: [1]\n", "spec: expected a mapping"),
        ("- a\n", "mapping at top level"),
        ("spec: {datastoreType: etcdv3, etcdEndpoints: '10.0.0.1:2379'}\n", "http://"),
        ("spec: {datastoreType: etcdv3, etcdCertFile: /c}\n", "together"),
        ("a: [\n", "invalid YAML"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text), env={})


def test_missing_file_and_bad_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(str(tmp_path / "nope.cfg"))
    with pytest.raises(ConfigError, match="datastoreType"):
        load_config(write(tmp_path, ""), env={"DATASTORE_TYPE": "zookeeper"})
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(write(tmp_path, ""), env={}, flags={"colour": "blue"})


def test_open_datastore_by_type(tmp_path: Path) -> None:
    mem = open_datastore(DatastoreConfig(datastore_type="memory"))
    assert isinstance(mem, MemoryDatastore)
    sq = open_datastore(
        load_config(write(tmp_path, ""), env={"CALICO_DATASTORE_PATH": str(tmp_path / "d.db")})
    )
    assert isinstance(sq, SqliteDatastore)
    sq.close()
