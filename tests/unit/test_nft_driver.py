"""NftTable against the in-memory fake kernel, the delta planner, readback parsing, and the
Felix agent loop over a memory datastore (its refresh schedule on a FakeClock)."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.datastore.memory import MemoryDatastore
from pycalico.felix.agent import Felix
from pycalico.felix.dataplane import (
    AddChain,
    AddElements,
    DeleteChain,
    DeleteElements,
    FakeNftRunner,
    FlushChain,
    NftError,
    NftTable,
    ReplaceTable,
    TableState,
    WriteChain,
    apply_tables,
    parse_table,
    render_ops,
)
from pycalico.felix.rules import NftSet, TableSpec, make_chain
from pycalico.system.clock import FakeClock
from tests.kit import felix_configuration, wait_for
from tests.unit.test_rules_renderer import render, state, wep


def spec(chains: dict[str, list[str]], sets: dict[str, set[str]] | None = None) -> TableSpec:
    mk = {n: make_chain(n, b) for n, b in chains.items()}
    ss = {n: NftSet(n, "ipv4_addr", frozenset(e), ("interval",)) for n, e in (sets or {}).items()}
    return TableSpec("ip", "calico", mk, ss)


def test_first_apply_is_one_replace_then_only_deltas() -> None:
    fake = FakeNftRunner()
    t = NftTable(fake, "ip")
    assert t.apply() == []  # nothing desired yet: nothing programmed
    assert fake.transactions == []
    t.set_desired(spec({"a": ["drop"], "b": ["jump a"]}, {"s": {"10.0.0.1/32"}}))
    ops = t.apply()
    assert [type(o) for o in ops] == [ReplaceTable]
    assert t.apply() == []  # no change, no transaction
    t.set_desired(spec({"a": ["drop"], "b": ["jump a"]}, {"s": {"10.0.0.1/32"}}))
    assert t.apply() == []
    assert len(fake.transactions) == 1
    t.set_desired(spec({"a": ["accept"], "b": ["jump a"]}, {"s": {"10.0.0.2/32"}}))
    ops = t.apply()
    assert {type(o) for o in ops} == {WriteChain, AddElements, DeleteElements}
    assert [o.chain.name for o in ops if isinstance(o, WriteChain)] == ["a"]
    assert fake.read_table("ip", "calico") == TableState.from_spec(
        spec({"a": ["accept"], "b": ["jump a"]}, {"s": {"10.0.0.2/32"}})
    )


def test_removed_chains_are_unreferenced_before_deletion() -> None:
    fake = FakeNftRunner()
    t = NftTable(fake, "ip")
    full = render(state()).tables()["ip"]
    t.set_desired(full)
    t.apply()
    smaller = render([r for r in state() if r["metadata"]["name"] != "node1-k8s-b-eth0"])
    t.set_desired(smaller.tables()["ip"])
    ops = t.apply()  # the fake rejects deleting chains still referenced by rules/map entries
    deleted = [o.name for o in ops if isinstance(o, DeleteChain)]
    assert "cali-tw-calib" in deleted and "cali-fw-calib" in deleted
    assert next(type(o) for o in ops if isinstance(o, (FlushChain, DeleteChain))) is FlushChain
    assert fake.read_table("ip", "calico") == TableState.from_spec(smaller.tables()["ip"])
    assert t.stats.full_replaces == 1 and t.stats.deltas == 1


def test_resync_repairs_drift_and_foreign_tables_untouched() -> None:
    fake = FakeNftRunner()
    foreign = spec({"mine": ["accept"]})
    fake.transact("inet", "other", [ReplaceTable(TableSpec("inet", "other", foreign.chains, {}))])
    before = fake.read_table("inet", "other")
    t = NftTable(fake, "ip")
    desired = render(state()).tables()["ip"]
    t.set_desired(desired)
    t.apply()
    fake.flush_table("ip", "calico")
    fake.delete_chain("ip", "calico", "cali-failsafe-out")
    t.request_resync()
    ops = t.apply()
    assert ops and not isinstance(ops[0], ReplaceTable)
    assert any(isinstance(o, AddChain) and o.chain.name == "cali-failsafe-out" for o in ops)
    assert fake.read_table("ip", "calico") == TableState.from_spec(desired)
    assert t.stats.drift_repairs == 1
    t.request_resync()
    assert t.apply() == []
    assert fake.read_table("inet", "other") == before
    assert all(tbl == "calico" for _f, tbl, _o in fake.transactions[1:])


def test_failed_delta_falls_back_to_full_replace() -> None:
    fake = FakeNftRunner()
    t = NftTable(fake, "ip")
    t.set_desired(spec({"a": ["drop"]}))
    t.apply()
    t.set_desired(spec({"a": ["accept"]}))
    fake.fail_next = 1
    ops = t.apply()
    assert [type(o) for o in ops] == [ReplaceTable]
    fake.fail_next = 2
    t.set_desired(spec({"a": ["return"]}))
    with pytest.raises(NftError):
        t.apply()
    assert t.dirty
    assert [type(o) for o in t.apply()] == [ReplaceTable]
    assert t.stats.failures == 3


def test_several_tables_land_in_one_transaction_or_not_at_all() -> None:
    """One logical update over several tables (Felix: the guard and main table of each
    family) is one transaction: a failure leaves every table as it was, and the retry
    replaces all of them together."""
    fake = FakeNftRunner()
    guard = NftTable(fake, "ip", "calico-guard")
    main4, main6 = NftTable(fake, "ip"), NftTable(fake, "ip6")

    def want(fam: str, name: str, body: str) -> TableSpec:
        return TableSpec(fam, name, {"a": make_chain("a", [body])}, {})

    def set_all(body: str) -> None:
        guard.set_desired(want("ip", "calico-guard", body))
        main4.set_desired(want("ip", "calico", body))
        main6.set_desired(want("ip6", "calico", body))

    set_all("drop")
    sent = apply_tables(fake, [guard, main4, main6])
    assert fake.batches == [[("ip", "calico-guard"), ("ip", "calico"), ("ip6", "calico")]]
    assert all(type(ops[0]) is ReplaceTable for ops in sent.values())
    assert apply_tables(fake, [guard, main4, main6]) == {}  # in sync: nothing sent
    before = {k: fake.read_table(*k) for k in fake.tables}
    set_all("accept")
    fake.fail_next = 2  # the delta and its full-replace retry both fail
    with pytest.raises(NftError):
        apply_tables(fake, [guard, main4, main6])
    assert {k: fake.read_table(*k) for k in fake.tables} == before  # nothing half-written
    assert guard.dirty and main4.dirty and main6.dirty
    fake.fail_next = 0
    apply_tables(fake, [guard, main4, main6])
    assert len(fake.batches[-1]) == 3
    assert all(isinstance(ops[0], ReplaceTable) for _f, _t, ops in fake.transactions[-3:])
    # A failed delta is retried as one full replace of every table it touched.
    set_all("return")
    fake.fail_next = 1
    apply_tables(fake, [guard, main4, main6])
    assert [len(b) for b in fake.batches[-2:]] == [3, 3]
    assert fake.read_table("ip6", "calico") == TableState.from_spec(want("ip6", "calico", "return"))


def test_render_ops_text() -> None:
    chain = make_chain("c", ["drop"])
    text = render_ops(
        "ip",
        "calico",
        [
            AddChain(chain),
            WriteChain(chain),
            AddElements("s", "set", ("10.0.0.1/32",)),
            DeleteElements("m", "map", ('"cali1"',)),
        ],
    )
    assert text.splitlines() == [
        "add table ip calico",
        "add chain ip calico c",
        "flush chain ip calico c",
        f'add rule ip calico c drop comment "cali:{chain.rules[0].hash}"',
        "add element ip calico s { 10.0.0.1/32 }",
        'delete element ip calico m { "cali1" }',
    ]
    replace = render_ops("ip", "calico", [ReplaceTable(spec({"c": ["drop"]}))])
    assert replace.startswith("add table ip calico\ndelete table ip calico\ntable ip calico {")


def test_parse_table_normalises_elements() -> None:
    doc: dict[str, Any] = {
        "nftables": [
            {"metainfo": {}},
            {"table": {"family": "ip", "name": "calico"}},
            {"set": {"family": "ip", "name": "s", "table": "calico", "type": "ipv4_addr",
                     "flags": ["interval"],
                     "elem": ["10.0.0.1", {"prefix": {"addr": "10.1.0.0", "len": 16}}]}},
            {"set": {"family": "ip", "name": "n", "table": "calico",
                     "type": ["ipv4_addr", "inet_proto", "inet_service"],
                     "elem": [{"concat": ["10.0.0.2", "udp", 53]}]}},
            {"map": {"family": "ip", "name": "m", "table": "calico", "type": "ifname",
                     "map": "verdict",
                     "elem": [["cali1", {"goto": {"target": "cali-fw-cali1"}}]]}},
            {"chain": {"family": "ip", "table": "calico", "name": "c"}},
            {"rule": {"family": "ip", "table": "calico", "chain": "c", "handle": 4,
                      "comment": "cali:abc", "expr": []}},
            {"rule": {"family": "ip", "table": "calico", "chain": "c", "handle": 5,
                      "expr": []}},
            {"rule": {"family": "ip", "table": "other", "chain": "c", "handle": 6,
                      "comment": "cali:zzz", "expr": []}},
        ]
    }  # fmt: skip
    st = parse_table(doc, "ip", "calico")
    assert st.chains == {"c": ("abc", "?5")}
    assert st.sets["s"] == (
        ("s", "ipv4_addr", ("interval",), None),
        frozenset({"10.0.0.1/32", "10.1.0.0/16"}),
    )
    assert st.sets["n"][1] == frozenset({"10.0.0.2 . 17 . 53"})
    assert st.sets["m"] == (
        ("m", "ifname", (), "verdict"),
        frozenset({'"cali1" : goto cali-fw-cali1'}),
    )


# --- the agent loop over a memory datastore and the fake kernel ----------------------------
def test_agent_programs_after_sync_and_follows_updates() -> None:
    ds = MemoryDatastore()
    for r in state():
        ds.create(r)
    fake = FakeNftRunner()
    clock = FakeClock()
    felix = Felix("node1", ds, fake, overrides={"nftablesRefreshInterval": 0.2}, clock=clock)
    felix.start()
    try:
        assert felix.wait_in_sync(5), felix.error
        first = next(t for t in fake.transactions if t[:2] == ("ip", "calico"))
        assert len(fake.batches[0]) == 4 and isinstance(first[2][0], ReplaceTable)
        assert "cali-tw-calib" in first[2][0].spec.chains  # the whole state in one go
        n = len(fake.transactions)
        ds.create(wep("c", "10.0.0.3", {"app": "a"}))
        wait_for(
            lambda: "cali-tw-calic" in (fake.read_table("ip", "calico") or TableState()).chains,
            5.0,
            0.02,
        )
        assert len(fake.transactions) > n
        assert not any(
            isinstance(o, ReplaceTable) for _f, _t, ops in fake.transactions[n:] for o in ops
        )
        # FelixConfiguration changes the wl-to-host action.
        ds.create(felix_configuration(defaultEndpointToHostAction="Accept"))
        wait_for(lambda: felix.config.default_endpoint_to_host_action == "Accept", 5.0, 0.02)
        chain = felix.renderer.tables()["ip"].chains["cali-wl-to-host"]
        wait_for(
            lambda: fake.read_table("ip", "calico").chains["cali-wl-to-host"] == chain.hashes,
            5.0,
            0.02,
        )  # type: ignore[union-attr]
        # Drift is repaired by the periodic resync: not before nftablesRefreshInterval elapsed.
        fake.flush_table("ip", "calico")
        assert felix.barrier()
        assert felix.stats()["table_ip"]["drift_repairs"] == 0 and felix.stats()["resyncs"] == 0
        assert fake.read_table("ip", "calico") != TableState.from_spec(
            felix.renderer.tables()["ip"]
        )
        clock.advance(0.2)
        assert felix.barrier()
        assert felix.stats()["table_ip"]["drift_repairs"] == 1
        wait_for(
            lambda: (
                fake.read_table("ip", "calico")
                == TableState.from_spec(felix.renderer.tables()["ip"])
            ),
            5.0,
            0.02,
        )
        assert felix.stats()["resyncs"] >= 1
        assert felix.stats()["active_local_endpoints"] == 3
    finally:
        felix.stop()
