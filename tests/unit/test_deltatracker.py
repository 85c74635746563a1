"""DeltaTracker: pending updates/deletes are exactly the difference between desired and the
dataplane view after any sequence of operations; applying the pending ops (and confirming
them) to a model dataplane makes it equal to desired; unconfirmed ops stay pending."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.felix.dataplane.deltatracker import DeltaTracker


def _check(t: DeltaTracker[str, int]) -> None:
    d, p = dict(t.desired), dict(t.dataplane)
    assert dict(t.pending_updates) == {k: v for k, v in d.items() if p.get(k) != v}
    assert t.pending_deletes == set(p) - set(d)
    assert t.in_sync() == (d == p)


def test_basic_delta_and_confirmation() -> None:
    t: DeltaTracker[str, int] = DeltaTracker()
    t.set_desired("a", 1)
    t.set_desired("b", 2)
    t.replace_all_dataplane({"b": 2, "c": 3})
    assert dict(t.pending_updates) == {"a": 1} and t.pending_deletes == {"c"}
    seen: list[str] = []
    t.iter_pending_updates(lambda k, v: seen.append(k) is None and False)  # not confirmed
    assert seen == ["a"] and dict(t.pending_updates) == {"a": 1}
    t.iter_pending_updates(lambda k, v: True)
    t.iter_pending_deletes(lambda k: True)
    assert t.in_sync() and dict(t.dataplane) == {"a": 1, "b": 2}
    t.set_desired("b", 5)
    assert dict(t.pending_updates) == {"b": 5}
    t.delete_desired("b")
    assert not t.pending_updates and t.pending_deletes == {"b"}
    t.delete_dataplane("b")  # gone by itself
    assert t.in_sync()


def test_values_equal_and_iteration_order() -> None:
    t: DeltaTracker[str, int] = DeltaTracker(values_equal=lambda a, b: a % 10 == b % 10)
    t.replace_all_dataplane({"x": 11})
    t.replace_all_desired({"x": 1, "z": 3, "y": 2})
    assert dict(t.pending_updates) == {"z": 3, "y": 2}
    order: list[str] = []
    t.iter_pending_updates(lambda k, v: order.append(k) is None, order=sorted)
    assert order == ["y", "z"] and t.in_sync()


_key = st.sampled_from("abcdef")
_op = st.one_of(
    st.tuples(st.just("set"), _key, st.integers(0, 3)),
    st.tuples(st.just("del"), _key, st.just(0)),
    st.tuples(st.just("replace_desired"), st.dictionaries(_key, st.integers(0, 3)), st.just(0)),
    st.tuples(st.just("replace_dp"), st.dictionaries(_key, st.integers(0, 3)), st.just(0)),
    st.tuples(st.just("dp_set"), _key, st.integers(0, 3)),
    st.tuples(st.just("dp_del"), _key, st.just(0)),
    st.tuples(st.just("apply"), st.sets(_key), st.just(0)),  # keys whose write fails
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=25))
def test_any_sequence_applies_to_desired(ops: list[tuple[str, object, int]]) -> None:
    t: DeltaTracker[str, int] = DeltaTracker()
    model: dict[str, int] = {}  # the "kernel"
    for name, arg, val in ops:
        if name == "set":
            t.set_desired(str(arg), val)
        elif name == "del":
            t.delete_desired(str(arg))
        elif name == "replace_desired":
            t.replace_all_desired(arg)  # type: ignore[arg-type]
        elif name in ("replace_dp", "dp_set", "dp_del"):  # drift, then a re-read
            if name == "replace_dp":
                model.clear()
                model.update(arg)  # type: ignore[call-overload]
            elif name == "dp_set":
                model[str(arg)] = val
            else:
                model.pop(str(arg), None)
            t.replace_all_dataplane(model)
        else:
            failing = set(arg)  # type: ignore[call-overload]

            def put(k: str, v: int, failing: set[str] = failing) -> bool:
                if k in failing:
                    return False
                model[k] = v
                return True

            def delete(k: str, failing: set[str] = failing) -> bool:
                if k in failing:
                    return False
                model.pop(k, None)
                return True

            t.iter_pending_deletes(delete)
            t.iter_pending_updates(put)
            assert dict(t.dataplane) == model
            assert set(t.pending_updates) | t.pending_deletes <= failing
        _check(t)
    t.iter_pending_deletes(lambda k: model.pop(k, None) is not None or True)
    t.iter_pending_updates(lambda k, v: model.__setitem__(k, v) is None)
    assert model == dict(t.desired) and t.in_sync()
