"""The size of every container a long-lived object keeps, for leak tests.

:func:`footprint` walks the attributes of ``root`` and of every pycalico object reachable
from it (through attributes and container elements) and returns, per attribute path, the
total length of the dicts, sets, lists and deques found there (elements of a container are
folded into one path: ``renderer._pol_users[*]``). A leak test records the footprint, feeds
N objects in and out, and asserts that no path grew: state kept per endpoint, policy or
selector ever seen shows up as a path whose length did not come back.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Mapping
from typing import Any

_CONTAINERS = (dict, set, frozenset, list, collections.deque)


def _ours(obj: Any) -> bool:
    return type(obj).__module__.startswith("pycalico.") and hasattr(obj, "__dict__")


def footprint(root: Any, skip: Iterable[type] = (), max_depth: int = 12) -> dict[str, int]:
    """Path -> total container length, for everything ``root`` keeps (``skip``: types not to
    walk into, e.g. the datastore, whose history is not the object's state)."""
    skipped = (*skip, threading.Thread, threading.Event, threading.Condition)
    sizes: collections.Counter[str] = collections.Counter()
    seen: set[int] = set()
    stack: list[tuple[str, Any, int]] = [("", root, 0)]
    while stack:
        path, obj, depth = stack.pop()
        if id(obj) in seen or depth > max_depth or isinstance(obj, skipped):
            continue
        seen.add(id(obj))
        if isinstance(obj, _CONTAINERS):
            sizes[path] += len(obj)
            items: Iterable[Any] = (
                (v for kv in obj.items() for v in kv) if isinstance(obj, Mapping) else obj
            )
            stack.extend((f"{path}[*]", v, depth + 1) for v in items)
        elif isinstance(obj, tuple):
            stack.extend((f"{path}[*]", v, depth + 1) for v in obj)
        elif _ours(obj):
            for name, value in vars(obj).items():
                stack.append((f"{path}.{name}" if path else name, value, depth + 1))
    return dict(sizes)


def grown(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """Paths whose total length is larger in ``after`` than in ``before``."""
    return {p: (before.get(p, 0), n) for p, n in after.items() if n > before.get(p, 0)}
