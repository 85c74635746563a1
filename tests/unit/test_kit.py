"""The shared test kit's own contract: waiting helpers, a few builder conventions, fakes."""

from __future__ import annotations

import itertools

import pytest

from tests.kit import fakes, ip_pool, node, poll, wait_for, wait_time


def test_wait_for_returns_the_first_truthy_value() -> None:
    calls = itertools.count()
    assert wait_for(lambda: max(0, next(calls) - 2), 1.0, 0.001) == 1


def test_wait_for_names_what_and_the_last_value_on_timeout() -> None:
    with pytest.raises(AssertionError, match=r"after 0.05s waiting for the moon; last: 0"):
        wait_for(lambda: 0, 0.05, 0.01, what="the moon")


def test_poll_returns_the_last_value_and_checks_once_more_at_the_deadline() -> None:
    seen: list[int] = []
    assert poll(lambda: seen.append(1) or [], 0.05, 0.01) == []
    assert len(seen) >= 2
    assert poll(lambda: 1 / 0, 0.02, 0.01, ignore=(ZeroDivisionError,)) is None


def test_wait_time_measures_and_raises_like_wait_for() -> None:
    calls = itertools.count()
    took = wait_time(lambda: next(calls) >= 3, 1.0, 0.01)
    assert 0.0 <= took < 1.0
    with pytest.raises(AssertionError, match="never"):
        wait_time(lambda: False, 0.02, 0.01, what="never")


def test_node_without_bgp_fields_has_an_empty_spec() -> None:
    assert node("n1")["spec"] == {}
    assert node("n1", "10.0.0.1")["spec"] == {"bgp": {"ipv4Address": "10.0.0.1/24"}}
    assert ip_pool("p", "10.1.0.0/16", block_size=26)["spec"] == {
        "cidr": "10.1.0.0/16",
        "blockSize": 26,
    }


def test_fakes_gathers_every_seam_fake() -> None:
    for name in fakes.__all__:
        assert getattr(fakes, name) is not None
    ds = fakes.memory_datastore(ip_pool("p"), node("n1"))
    assert [r["metadata"]["name"] for r in ds.list("Node").items] == ["n1"]
