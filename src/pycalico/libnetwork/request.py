"""Typed access to one Docker plugin request: the drivers read fields only through here.

dockerd sends small JSON objects of a known shape, but the socket accepts any JSON. Every
accessor checks the field's JSON type and turns a wrong one into a
:class:`~pycalico.libnetwork.driver.DriverError`-compatible :class:`RequestError` naming the
field and what it got (a bounded, escaped excerpt), so no request shape reaches the drivers'
catch-all and nothing is written from a half-understood request.

Owns: :class:`Request` and the Docker object-id rule (:data:`DOCKER_ID`: what dockerd's
network and endpoint ids look like; an endpoint id becomes part of interface and resource
names, so it must be plain).

Invariants: an absent field and JSON ``null`` read as the empty value of the field's type;
accessors never mutate the request.
"""

from __future__ import annotations

import re
from typing import Any

from pycalico.errors import CalicoError, excerpt

#: dockerd's ids are 64 hex digits; letters and digits (up to 64) are accepted here.
DOCKER_ID = re.compile(r"[0-9A-Za-z]{1,64}")
_EXCERPT = 64


class RequestError(CalicoError):
    """A request field of the wrong type or form (the message names the field)."""


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)  # fmt: skip


class Request:
    """One decoded request body (a JSON object; ``null`` or no body: an empty one)."""

    def __init__(self, method: str, body: Any) -> None:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise RequestError(f"{method}: the request body must be a JSON object, not "
                               f"{_kind(body)}")  # fmt: skip
        self.method = method
        self.body: dict[str, Any] = body

    def _bad(self, key: str, value: object, want: str) -> RequestError:
        return RequestError(
            f"{self.method}: {key} must be {want}, not {_kind(value)} ({excerpt(value, _EXCERPT)})"
        )

    def text(self, key: str) -> str:
        v = self.body.get(key)
        if v is None:
            return ""
        if not isinstance(v, str):
            raise self._bad(key, v, "a string")
        return v

    def flag(self, key: str) -> bool:
        v = self.body.get(key)
        if v is None:
            return False
        if not isinstance(v, bool):
            raise self._bad(key, v, "a boolean")
        return v

    def obj(self, key: str) -> dict[str, Any]:
        v = self.body.get(key)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self._bad(key, v, "an object")
        return v

    def objs(self, key: str) -> list[Request]:
        """A list of objects, each as a :class:`Request` (field names ``<key>[i].<field>``)."""
        v = self.body.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise self._bad(key, v, "a list of objects")
        out = []
        for i, item in enumerate(v):
            if not isinstance(item, dict):
                raise self._bad(f"{key}[{i}]", item, "an object")
            out.append(Request(f"{self.method}: {key}[{i}]", item))
        return out

    def sub(self, key: str) -> Request:
        """An object field as a :class:`Request` (``{}`` when absent)."""
        return Request(f"{self.method}: {key}", self.obj(key))

    def docker_id(self, key: str, *, required: bool = True) -> str:
        """A network or endpoint id (:data:`DOCKER_ID`); "" only when not ``required``."""
        v = self.text(key)
        if not v and not required:
            return ""
        if not DOCKER_ID.fullmatch(v):
            raise self._bad(key, v, "a Docker id (1-64 letters and digits)")
        return v
