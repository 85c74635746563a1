"""YAML/JSON codec for API resources: documents in, typed resources out, and back.

- :func:`load_documents` turns text (multi-document YAML, a JSON object or array, and
  ``kind: List`` / ``<Kind>List`` envelopes with ``items``, nested) into a flat list of dicts.
- :func:`decode` turns one dict into a registered :class:`Resource` (looked up by
  ``apiVersion`` + ``kind``), validated field by field (pydantic) and then cross-field
  (``check``), with Calico's defaults applied last. Failures raise :class:`ValidationFailed`
  listing every problem with a Calico-style path (``spec.ingress[0].destination.ports[1]``).
- :func:`decode_all` decodes every document of a text and reports the problems of all of them.
- :func:`encode` gives the v3 JSON shape (apiVersion, kind, metadata, spec; ``None`` omitted).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from pycalico.api.base import Problem, Problems, Resource, ValidationFailed, lookup
from pycalico.api.loader import ManifestError, parse_documents
from pycalico.errors import excerpt

_TAG = re.compile(r"[\[\](){}]")
_TYPE_TAGS = {"int", "str", "float", "bool", "list", "dict", "none", "literal"}


# libyaml's parser/emitter when present (several times faster); same safe semantics.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """SafeLoader without YAML 1.1 base-60 numbers and timestamps: ``12:34:56:78:90:12``
    (a MAC), ``1:30`` and ``2024-05-01T10:00:00Z`` stay strings, as for Calico's Go decoder."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx) for tag, rx in resolvers if not tag.endswith((":int", ":float", ":timestamp"))
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$""",
        re.X,
    ),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
        |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _source_problem(source: str, reason: str) -> ValidationFailed:
    return ValidationFailed([Problem("", source, "", reason)])


def _flatten(doc: Any, out: list[dict[str, Any]], source: str) -> None:
    if doc is None:
        return
    if isinstance(doc, list):
        for item in doc:
            _flatten(item, out, source)
        return
    if not isinstance(doc, dict):
        raise _source_problem(source, f"document is not a mapping: {excerpt(doc, 60)}")
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise _source_problem(source, f"{excerpt(kind, 60)}.items is not a list")
        for item in items:
            _flatten(item, out, source)
        return
    out.append(doc)


def load_documents(text: str, source: str = "<input>") -> list[dict[str, Any]]:
    """Parse YAML or JSON text into resource dicts (Lists expanded, empty documents dropped).

    Parsing is bounded (:mod:`pycalico.api.loader`: size, aliases, depth, duplicate keys).
    Raises :class:`ValidationFailed` (one problem naming ``source``) on any parse failure.
    """
    try:
        docs = parse_documents(text, _Loader, source)
    except ManifestError as e:
        raise _source_problem(source, e.reason) from None
    out: list[dict[str, Any]] = []
    for doc in docs:
        _flatten(doc, out, source)
    return out


def loc_to_path(loc: Iterable[int | str]) -> str:
    """Pydantic error location -> Calico-style field path (``spec.ingress[0].protocol``)."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _TAG.search(part) and part not in _TYPE_TAGS:
            path += f".{part}" if path else part
        # other parts are pydantic's union/validator tags (``function-after[...]``): dropped
    return path


def _reason(err: Mapping[str, Any]) -> str:
    etype = err.get("type", "")
    msg = str(err.get("msg", ""))
    if etype == "extra_forbidden":
        return "unknown field"
    if etype == "missing":
        return "required field is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    value = err.get("input")
    if etype not in ("value_error",) and isinstance(value, str | int | float | bool):
        return f"{msg} (got {excerpt(repr(value))})"
    return msg


def _meta_name(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata")
    if isinstance(meta, dict):
        name = meta.get("name")
        if isinstance(name, str):
            return name
    return ""


def _drop_nulls(value: Any) -> Any:
    """``key: null`` (or an empty YAML value) means "not set", as in Go's JSON decoding."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def decode(doc: Mapping[str, Any]) -> Resource:
    """Validate one resource dict into its typed model; raise ValidationFailed with all problems."""
    kind = doc.get("kind")
    name = _meta_name(doc)
    api_version = doc.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        raise ValidationFailed([Problem("", name, "kind", "kind is required")])
    if not isinstance(api_version, str) or not api_version:
        raise ValidationFailed([Problem(kind, name, "apiVersion", "apiVersion is required")])
    info = lookup(api_version, kind)
    if info is None:
        from pycalico.api.base import KINDS

        known = KINDS.get(kind)
        if known is not None:
            reason = f"unknown apiVersion {api_version!r} for kind {kind} (use {known.api_version})"
            raise ValidationFailed([Problem(kind, name, "apiVersion", reason)])
        raise ValidationFailed([Problem(kind, name, "kind", f"unknown kind {kind!r}")])
    try:
        res = info.cls.model_validate(_drop_nulls(dict(doc)))
    except ValidationError as e:
        # One problem per field: a value failing every branch of a union (``int | str``)
        # yields one pydantic error per branch, all at the same path.
        seen: set[str] = set()
        problems = []
        for err in e.errors():
            path = loc_to_path(err["loc"])
            if path not in seen:
                seen.add(path)
                problems.append(Problem(kind, name, path, _reason(err)))
        raise ValidationFailed(problems) from None
    assert isinstance(res, Resource)
    collected = Problems()
    res.check("", collected)
    if collected:
        raise ValidationFailed([Problem(kind, name, p, r) for p, r in collected.items])
    res.apply_defaults()
    return res


def decode_all(text: str, source: str = "<input>") -> list[Resource]:
    """Decode every document in ``text``; raise ValidationFailed listing every problem."""
    docs = load_documents(text, source)
    out: list[Resource] = []
    problems: list[Problem] = []
    for doc in docs:
        try:
            out.append(decode(doc))
        except ValidationFailed as e:
            problems.extend(e.problems)
    if problems:
        raise ValidationFailed(problems)
    return out


def encode(resource: Resource) -> dict[str, Any]:
    """The v3 JSON shape of a resource (apiVersion, kind, metadata, spec...; None omitted)."""
    data: dict[str, Any] = resource.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def _payload(resources: Resource | Sequence[Resource]) -> dict[str, Any]:
    if isinstance(resources, Resource):
        return encode(resources)
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [encode(r) for r in resources],
        "metadata": {},
    }


def to_yaml(resources: Resource | Sequence[Resource]) -> str:
    """YAML text of one resource, or of a ``kind: List`` of several."""
    return yaml.dump(_payload(resources), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def to_json(resources: Resource | Sequence[Resource], indent: int = 2) -> str:
    """JSON text of one resource, or of a ``kind: List`` of several."""
    return json.dumps(_payload(resources), indent=indent)
