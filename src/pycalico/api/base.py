"""Foundations of the v3 resource API: base model, metadata, kind registry, problem reporting.

Conventions every kind module follows:
- Python attribute names are the exact JSON field names of Calico's API (camelCase, e.g.
  ``ipipMode``, ``disableBGPExport``); a name that is a Python keyword gets an alias.
- Every model forbids unknown fields (``extra="forbid"``).
- Field-level rules (types, enums, ranges, formats) are pydantic validation; cross-field rules
  live in ``check(self, path, problems)`` methods that append to a :class:`Problems` list, so
  every problem names the field path it is about (``spec.ingress[0].protocol``).
- A kind is registered with :func:`register`; :mod:`pycalico.api.codec` decodes any
  document through the registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from pycalico.errors import CalicoError, excerpt

V3 = "projectcalico.org/v3"


@dataclass(frozen=True)
class Problem:
    """One validation problem: which resource, which field, why."""

    kind: str
    name: str
    path: str
    reason: str

    def __str__(self) -> str:
        # Names and reasons can carry hostile input: bounded, control characters escaped.
        name = excerpt(self.name) if self.name else "<unnamed>"
        if not self.kind and not self.path:  # about an input, not a resource
            return f"{name}: {excerpt(self.reason, 400)}"
        return (
            f"{excerpt(self.kind)} {name}: {excerpt(self.path, 200)}: {excerpt(self.reason, 400)}"
        )


@dataclass
class Problems:
    """Collector used by ``check`` methods."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str, reason: str) -> None:
        self.items.append((path, reason))

    def __bool__(self) -> bool:
        return bool(self.items)


class ValidationFailed(CalicoError, ValueError):
    """A resource (or several) failed validation."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def _scalar_to_str(value: Any) -> Any:
    """YAML scalars that were meant as text (``containerID: 1337``, ``version: 2``) -> str."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


LenientStr = Annotated[str, BeforeValidator(_scalar_to_str)]
"""A string field that also accepts a YAML number/boolean written without quotes."""


class Model(BaseModel):
    """Base of every API model: unknown fields rejected, JSON names as attribute names."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        validate_default=False,
        str_strip_whitespace=False,
    )

    def check(self, path: str, problems: Problems) -> None:
        """Cross-field validation; subclasses extend. ``path`` is this model's field path."""
        for name, _info in type(self).model_fields.items():
            value = getattr(self, name)
            alias = type(self).model_fields[name].alias or name
            _check_value(value, f"{path}.{alias}" if path else alias, problems)


def _check_value(value: Any, path: str, problems: Problems) -> None:
    if isinstance(value, Model):
        value.check(path, problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, f"{path}[{i}]", problems)
    elif isinstance(value, dict):
        for k, item in value.items():
            if isinstance(item, Model):
                item.check(f"{path}.{k}", problems)


# --- names and labels, as Kubernetes/Calico validate them ---------------------------------

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


_NAME_CHARS = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)
#: Kubernetes' limit on the total size of an object's annotations (keys + values, bytes).
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid Kubernetes qualified label name, or None."""
    prefix, sep, name = key.rpartition("/")
    if sep:
        if not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix):
            return f"invalid label key prefix {prefix!r} (must be a lower-case DNS subdomain)"
    if not name:
        return f"invalid label key {key!r}: name part must be non-empty"
    if len(name) > 63:
        return f"invalid label key {key!r}: name part must be no more than 63 characters"
    if not _LABEL_NAME.match(name):
        return f"invalid label key {key!r}: name part {_NAME_CHARS}"
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63:
        return f"invalid label value {value!r}: must be no more than 63 characters"
    if not _LABEL_VALUE.match(value):
        return f"invalid label value {value!r}: must be empty or {_NAME_CHARS[5:]}"
    return None


def annotations_problems(annotations: dict[str, str] | None, path: str, problems: Problems) -> None:
    """Kubernetes/Calico annotation rules: every key a qualified name (checked lower-cased,
    as Calico does) and keys + values at most 256 KiB in total (UTF-8 bytes)."""
    total = 0
    for k, v in (annotations or {}).items():
        why = label_key_problem(k.lower())
        if why:
            problems.add(f"{path}.{k}", why.replace("label", "annotation"))
        total += len(k.encode()) + len(str(v).encode())
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        problems.add(
            path,
            f"total size of annotations is too large by {total - TOTAL_ANNOTATION_SIZE_LIMIT} "
            f"bytes ({total} > {TOTAL_ANNOTATION_SIZE_LIMIT}: keys and values count)",
        )


def subdomain_problem(name: str) -> str | None:
    if not name:
        return "name is required"
    if len(name) > 253:
        return "name is longer than 253 characters"
    if not DNS1123_SUBDOMAIN.match(name):
        return (
            f"invalid name {name!r}: must consist of lower case alphanumeric characters, "
            "'-' or '.', and start and end with an alphanumeric character"
        )
    return None


# --- registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindInfo:
    """What the rest of the system needs to know about a kind."""

    kind: str
    api_version: str
    namespaced: bool
    aliases: tuple[str, ...]
    cls: type[Any]


KINDS: dict[str, KindInfo] = {}
"""Kinds by name. A v3 kind wins a name clash (``NetworkPolicy``); see :func:`lookup`."""
BY_GVK: dict[tuple[str, str], KindInfo] = {}
"""Every registered kind by ``(apiVersion, kind)``."""
_ALIASES: dict[str, str] = {}

T = TypeVar("T")


def register(
    kind: str,
    *,
    namespaced: bool = False,
    aliases: tuple[str, ...] = (),
    api_version: str = V3,
) -> Callable[[type[T]], type[T]]:
    """Class decorator registering a resource class under ``kind``."""

    def deco(cls: type[T]) -> type[T]:
        info = KindInfo(kind, api_version, namespaced, aliases, cls)
        BY_GVK[(api_version, kind)] = info
        if hasattr(cls, "namespaced"):
            cls.namespaced = namespaced  # type: ignore[attr-defined]
        if kind in KINDS and KINDS[kind].api_version == V3 and api_version != V3:
            return cls  # the v3 kind keeps the bare name and its aliases
        KINDS[kind] = info
        for a in (kind.lower(), *aliases):
            _ALIASES[a.lower()] = kind
        return cls

    return deco


def lookup(api_version: str, kind: str) -> KindInfo | None:
    """The registered kind for a document's ``apiVersion``/``kind``, or None."""
    return BY_GVK.get((api_version, kind))


def resolve_kind(name: str) -> str | None:
    """Map a user's kind word (``ippool``, ``pools``, ``IPPool``) to the canonical kind."""
    if name in KINDS:
        return name
    low = name.lower()
    if low in _ALIASES:
        return _ALIASES[low]
    # Every kind also answers to its plural (``bgpconfigurations``, ``networkpolicies``).
    for singular in (low[:-3] + "y" if low.endswith("ies") else "", low[:-2], low[:-1]):
        if singular and singular in _ALIASES and low.endswith("s"):
            return _ALIASES[singular]
    return None


# --- metadata and the resource envelope -----------------------------------------------------


class ObjectMeta(Model):
    """Kubernetes-style object metadata. The datastore owns resourceVersion/uid/timestamp."""

    name: str = ""
    namespace: str | None = None
    generateName: str | None = None
    labels: dict[str, LenientStr] | None = None
    annotations: dict[str, LenientStr] | None = None
    resourceVersion: str | None = None
    uid: str | None = None
    creationTimestamp: str | None = None
    deletionTimestamp: str | None = None
    deletionGracePeriodSeconds: int | None = None
    generation: int | None = None
    finalizers: list[str] | None = None
    ownerReferences: list[dict[str, Any]] | None = None
    managedFields: list[dict[str, Any]] | None = None

    def check(self, path: str, problems: Problems) -> None:
        for k, v in (self.labels or {}).items():
            why = label_key_problem(k) or label_value_problem(v)
            if why:
                problems.add(f"{path}.labels", why)
        annotations_problems(self.annotations, f"{path}.annotations", problems)


class Resource(Model):
    """Envelope shared by every kind: apiVersion, kind, metadata (+ spec in subclasses).

    ``check_name`` validates metadata.name; kinds with other naming rules override it.
    """

    apiVersion: str = V3
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    namespaced: ClassVar[bool] = False

    def model_post_init(self, context: Any, /) -> None:
        # Namespaced kinds live in namespace ``default`` unless told otherwise (as calicoctl).
        if type(self).namespaced and not self.metadata.namespace:
            self.metadata.namespace = "default"

    def apply_defaults(self) -> None:
        """Fill Calico's defaulted fields (e.g. policy ``types``); run after validation."""

    def warnings(self) -> list[Problem]:
        """Things about a valid resource the user should know (printed by ``calicoctl
        validate`` and the write commands, which still succeed); kinds extend this."""
        return []

    def check_name(self, problems: Problems) -> None:
        why = subdomain_problem(self.metadata.name)
        if why:
            problems.add("metadata.name", why)

    def check(self, path: str, problems: Problems) -> None:
        self.check_name(problems)
        ns = self.metadata.namespace
        if ns is not None and type(self).namespaced:
            if len(ns) > 63 or not DNS1123_LABEL.match(ns):
                problems.add(
                    "metadata.namespace", f"invalid namespace {ns!r} (must be a DNS label)"
                )
        super().check(path, problems)
