"""Fault behaviour against real servers: etcd stopped / restarted under a running syncer, TLS,
unreachable endpoints. (sqlite corruption/unwritable cases: tests/unit/test_datastore_sqlite.py)"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from pycalico.config import DatastoreConfig
from pycalico.datastore import Resource, Unavailable, key_for, open_datastore
from pycalico.datastore.syncer import Syncer, SyncStatus
from tests.contract.syncview import SyncView
from tests.fixtures.etcd import EtcdServer, free_port
from tests.kit import ip_pool

pytestmark = pytest.mark.etcd


def pool(name: str) -> Resource:
    return ip_pool(name, "10.0.0.0/16")


def test_unreachable_endpoint_is_unavailable_fast() -> None:
    cfg = DatastoreConfig(
        datastore_type="etcdv3", etcd_endpoints=(f"http://127.0.0.1:{free_port()}",)
    )
    ds = open_datastore(cfg)
    t = time.monotonic()
    with pytest.raises(Unavailable, match="unreachable"):
        ds.get("IPPool", "x")
    with pytest.raises(Unavailable):
        next(iter(ds.watch("/calico/", 0, timeout=1)))
    assert time.monotonic() - t < 5
    ds.close()


def test_failover_to_second_endpoint(etcd_server: EtcdServer) -> None:
    etcd_server.wipe()
    dead = f"http://127.0.0.1:{free_port()}"
    ds = open_datastore(
        DatastoreConfig(datastore_type="etcdv3", etcd_endpoints=(dead, etcd_server.url))
    )
    try:
        ds.create(pool("fo"))
        assert ds.get("IPPool", "fo")["metadata"]["name"] == "fo"
    finally:
        ds.close()


def test_etcd_stop_gives_unavailable_and_syncer_recovers_on_restart(
    etcd_server_fn: EtcdServer,
) -> None:
    server = etcd_server_fn
    ds = open_datastore(server.config())
    writer = open_datastore(server.config())
    sv = SyncView(forbid_empty=True)
    syncer = Syncer.for_kinds(ds, ["IPPool"], sv.cb, retry_interval=0.1, max_retry_interval=0.5)
    view, statuses = sv.view, sv.statuses

    def drain(until: Callable[[], bool]) -> None:
        sv.drain(until, timeout=15)

    try:
        writer.create(pool("a"))
        writer.create(pool("b"))
        syncer.start()
        drain(lambda: statuses[-1:] == [SyncStatus.IN_SYNC] and len(view) == 2)

        server.stop()
        for op in (
            lambda: ds.get("IPPool", "a"),
            lambda: ds.list("IPPool"),
            lambda: writer.create(pool("c")),
        ):
            t = time.monotonic()
            with pytest.raises(Unavailable):
                op()
            assert time.monotonic() - t < 5
        drain(lambda: statuses[-1] is SyncStatus.WAIT_FOR_DATASTORE)

        server.start()
        drain(lambda: statuses[-1] is SyncStatus.IN_SYNC)
        assert set(view) == {key_for("IPPool", "a"), key_for("IPPool", "b")}
        writer.delete("IPPool", "a")
        writer.create(pool("c"))
        drain(lambda: set(view) == {key_for("IPPool", "b"), key_for("IPPool", "c")})
    finally:
        syncer.stop()
        ds.close()
        writer.close()


def test_tls_with_client_certificates(etcd_tls: EtcdServer) -> None:
    assert etcd_tls.tls is not None
    ds = open_datastore(etcd_tls.config())
    try:
        created = ds.create(pool("secure"))
        evs = list(ds.watch("/calico/", int(created["metadata"]["resourceVersion"]) - 1, 2))
        assert evs and evs[0].obj["metadata"]["name"] == "secure"
        assert ds.list("IPPool").items[0]["metadata"]["uid"] == created["metadata"]["uid"]
    finally:
        ds.close()
    # no client certificate: the server refuses
    no_cert = open_datastore(
        DatastoreConfig(
            datastore_type="etcdv3",
            etcd_endpoints=(etcd_tls.url,),
            etcd_ca_cert_file=etcd_tls.tls.ca,
        )
    )
    with pytest.raises(Unavailable):
        no_cert.get("IPPool", "secure")
    # a CA that did not sign the server certificate: verification fails
    wrong_ca = open_datastore(
        DatastoreConfig(
            datastore_type="etcdv3",
            etcd_endpoints=(etcd_tls.url,),
            etcd_ca_cert_file=etcd_tls.tls.client_cert,
            etcd_cert_file=etcd_tls.tls.client_cert,
            etcd_key_file=etcd_tls.tls.client_key,
        )
    )
    with pytest.raises(Unavailable):
        wrong_ca.get("IPPool", "secure")
