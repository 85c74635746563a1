"""State expanders: one sequence of whole datastore states -> many update sequences that must
all reach the same results (Go Felix ``calc`` tests' expanders).

A *state* is a mapping ``key -> resource`` (everything in the datastore at that moment). A
test gives a list of states; an *expander* turns it into a list of :class:`Step`: a batch of
``(key, resource | None)`` updates (``None`` = deleted) fed together, after which the
consumer flushes. A step that leaves the datastore equal to state ``i`` carries
``reached=i``; at every such checkpoint the consumer's observable result must equal the
result of feeding state ``i`` from scratch in one batch (:func:`check_expansions`).

Expanders (:data:`EXPANDERS`): ``in_order`` (each transition one batch, keys sorted),
``reversed_keys`` (keys of each transition in reverse order), ``split`` (every update its
own batch), ``squashed`` (skip every other intermediate state: only the later state's diff),
``from_scratch_to_last`` (only the last state, in one batch), ``empty_batches`` (an empty
batch before and after every update), ``deletes_first`` / ``adds_first`` (within each
transition), ``reversed_states`` (the states played backwards). :func:`compose` chains two.

The system under test is generic: a *harness factory* returns a fresh object with
``feed(updates)`` (apply one batch and flush) and ``result()`` (a comparable observation).
:class:`PureHarness` adapts a pure function ``state -> result`` (e.g. the route
``compute``); incremental consumers (a ``CalcGraph`` and what its messages build, e.g.
``tests/unit/test_calc_order.py``, ``tests/unit/test_calc_routes_order.py``) implement the
two methods themselves.

Invariant: expanders are pure and deterministic (no randomness); every expansion ends at the
last state (``reversed_states`` at the first), and every state the expansion passes through
is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Update = tuple[str, Any]  # (key, resource dict or None for deleted)
State = Mapping[str, Any]


@dataclass(frozen=True)
class Step:
    """One batch of updates; ``reached`` is the index of the state the datastore equals
    afterwards (``None`` in the middle of a transition)."""

    updates: tuple[Update, ...]
    reached: int | None = None


Expander = Callable[[Sequence[State]], list[Step]]


def diff(old: State, new: State) -> list[Update]:
    """Updates taking ``old`` to ``new``, in key order (deletes as ``(key, None)``)."""
    out: list[Update] = []
    for k in sorted(set(old) | set(new)):
        if k not in new:
            out.append((k, None))
        elif k not in old or old[k] != new[k]:
            out.append((k, new[k]))
    return out


def _transitions(states: Sequence[State]) -> list[tuple[int, list[Update]]]:
    prev: State = {}
    out = []
    for i, s in enumerate(states):
        out.append((i, diff(prev, s)))
        prev = s
    return out


def in_order(states: Sequence[State]) -> list[Step]:
    return [Step(tuple(ups), i) for i, ups in _transitions(states)]


def reversed_keys(states: Sequence[State]) -> list[Step]:
    return [Step(tuple(reversed(ups)), i) for i, ups in _transitions(states)]


def split(states: Sequence[State]) -> list[Step]:
    out: list[Step] = []
    for i, ups in _transitions(states):
        if not ups:
            out.append(Step((), i))
        for j, u in enumerate(ups):
            out.append(Step((u,), i if j == len(ups) - 1 else None))
    return out


def squashed(states: Sequence[State]) -> list[Step]:
    """Skip every other intermediate state (0, 2, 4, ..., always the last)."""
    keep = [i for i in range(len(states)) if i % 2 == 0 or i == len(states) - 1]
    out: list[Step] = []
    prev: State = {}
    for i in keep:
        out.append(Step(tuple(diff(prev, states[i])), i))
        prev = states[i]
    return out


def from_scratch_to_last(states: Sequence[State]) -> list[Step]:
    if not states:
        return []
    return [Step(tuple(diff({}, states[-1])), len(states) - 1)]


def empty_batches(states: Sequence[State]) -> list[Step]:
    out: list[Step] = [Step(())]
    for step in split(states):
        out.append(step)
        out.append(Step((), step.reached))
    return out


def _partitioned(states: Sequence[State], deletes_first: bool) -> list[Step]:
    out: list[Step] = []
    for i, ups in _transitions(states):
        dels = [u for u in ups if u[1] is None]
        sets = [u for u in ups if u[1] is not None]
        out.append(Step(tuple(dels + sets if deletes_first else sets + dels), i))
    return out


def deletes_first(states: Sequence[State]) -> list[Step]:
    return _partitioned(states, True)


def adds_first(states: Sequence[State]) -> list[Step]:
    return _partitioned(states, False)


def reversed_states(states: Sequence[State]) -> list[Step]:
    """The states played backwards (last first); checkpoints keep the original indices."""
    n = len(states)
    back = list(reversed(states))
    return [
        Step(s.updates, None if s.reached is None else n - 1 - s.reached) for s in in_order(back)
    ]


def compose(outer: Callable[[list[Step]], list[Step]], inner: Expander) -> Expander:
    """``outer`` applied to the steps ``inner`` produces (see :func:`map_steps`)."""
    return lambda states: outer(inner(states))


def map_steps(fn: Callable[[Step], list[Step]]) -> Callable[[list[Step]], list[Step]]:
    """Lift a per-step rewrite into a step-list rewrite (the last produced step of each
    input step keeps its ``reached``)."""

    def outer(steps: list[Step]) -> list[Step]:
        out: list[Step] = []
        for s in steps:
            parts = fn(s)
            out.extend(Step(p.updates) for p in parts[:-1])
            out.append(Step(parts[-1].updates, s.reached) if parts else Step((), s.reached))
        return out

    return outer


EXPANDERS: dict[str, Expander] = {
    "in_order": in_order,
    "reversed_keys": reversed_keys,
    "split": split,
    "squashed": squashed,
    "from_scratch_to_last": from_scratch_to_last,
    "empty_batches": empty_batches,
    "deletes_first": deletes_first,
    "adds_first": adds_first,
    "reversed_states": reversed_states,
    "split_reversed": compose(
        map_steps(lambda s: [Step((u,)) for u in reversed(s.updates)]), in_order
    ),
}


# --- running --------------------------------------------------------------------------------
class Harness(Protocol):
    """A fresh consumer: ``feed`` applies one batch and flushes; ``result`` observes it."""

    def feed(self, updates: Sequence[Update]) -> None: ...

    def result(self) -> Any: ...


HarnessFactory = Callable[[], Harness]


class PureHarness:
    """Adapts a pure ``compute(state) -> result`` function to :class:`Harness`."""

    def __init__(self, compute: Callable[[Mapping[str, Any]], Any]) -> None:
        self._compute = compute
        self._state: dict[str, Any] = {}

    def feed(self, updates: Sequence[Update]) -> None:
        for k, v in updates:
            if v is None:
                self._state.pop(k, None)
            else:
                self._state[k] = v

    def result(self) -> Any:
        return self._compute(dict(self._state))


def run_steps(factory: HarnessFactory, steps: Sequence[Step]) -> dict[int, Any]:
    """Feed ``steps`` to a fresh harness; the result at each checkpoint (last one wins)."""
    h = factory()
    seen: dict[int, Any] = {}
    for step in steps:
        h.feed(step.updates)
        if step.reached is not None:
            seen[step.reached] = h.result()
    return seen


def reference(factory: HarnessFactory, state: State) -> Any:
    """The result of feeding ``state`` in one batch to a fresh harness."""
    h = factory()
    h.feed(diff({}, state))
    return h.result()


def check_expansions(
    factory: HarnessFactory,
    states: Sequence[State],
    expanders: Mapping[str, Expander] | None = None,
    compare: Callable[[Any, Any], bool] | None = None,
) -> int:
    """Assert that every expansion of ``states`` gives, at every state it reaches, the same
    result as that state fed from scratch. Returns the number of checkpoints compared."""
    refs = [reference(factory, s) for s in states]
    eq = compare or (lambda a, b: bool(a == b))
    checked = 0
    for name, expand in (expanders or EXPANDERS).items():
        got = run_steps(factory, expand(states))
        for i, value in sorted(got.items()):
            checked += 1
            if not eq(value, refs[i]):
                raise AssertionError(
                    f"expander {name!r}: result at state {i} differs from state {i} fed "
                    f"from scratch:\n{describe_difference(value, refs[i])}"
                )
    return checked


def describe_difference(got: Any, expected: Any, path: str = "", limit: int = 12) -> str:
    """A short, readable account of where two nested results differ."""
    lines: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if len(lines) >= limit or a == b:
            return
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for k in sorted(set(a) | set(b), key=repr):
                if k not in a:
                    lines.append(f"  {where}[{k!r}]: missing (expected {_short(b[k])})")
                elif k not in b:
                    lines.append(f"  {where}[{k!r}]: unexpected {_short(a[k])}")
                else:
                    walk(a[k], b[k], f"{where}[{k!r}]")
            return
        if isinstance(a, tuple | list) and isinstance(b, tuple | list) and len(a) == len(b):
            for n, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{where}[{n}]")
            return
        if hasattr(a, "__dict__") and type(a) is type(b):
            walk(vars(a), vars(b), f"{where}.")
            return
        lines.append(f"  {where or 'result'}: got {_short(a)}, expected {_short(b)}")

    walk(got, expected, path)
    return "\n".join(lines) or "  (values compare unequal but no difference found)"


def _short(v: Any, n: int = 300) -> str:
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


def draw_states(
    draw: Callable[[Any], Any], universe: Mapping[str, Sequence[Any]], max_states: int = 4
) -> list[State]:
    """For hypothesis ``@st.composite`` strategies: 1..``max_states`` whole states, each
    holding, for every key of ``universe``, one of its variants or nothing."""
    from hypothesis import strategies as st

    out: list[State] = []
    for _ in range(draw(st.integers(min_value=1, max_value=max_states))):
        state: dict[str, Any] = {}
        for key, variants in universe.items():
            i = draw(st.integers(min_value=-1, max_value=len(variants) - 1))
            if i >= 0:
                state[key] = variants[i]
        out.append(state)
    return out
