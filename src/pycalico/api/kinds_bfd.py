"""BFDConfiguration kind of the v3 API: BFD timers per interface for the nodes it selects.

Owns Calico's field names, types, defaults and validation for ``BFDConfiguration``
(``spec.nodeSelector``, ``spec.interfaces[]`` with ``matchPattern``,
``minimumRecvInterval``, ``minimumSendInterval``, ``idleSendInterval``, ``multiplier``).
Whether a BGP session uses BFD is decided elsewhere (BGPPeer ``failureDetectionMode``,
BGPConfiguration ``nodeMeshFailureDetectionMode``); this kind only carries the timers.

Invariants: decode fills the defaults Calico's CRD fills (``matchPattern: "*"``,
``minimumRecvInterval: 10ms``, ``minimumSendInterval: 100ms``, ``idleSendInterval: 1m``,
``multiplier: 5``); intervals are whole milliseconds > 0; a bad field is reported by name.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, StrictInt, StrictStr

from pycalico.api.base import Model, Problems, Resource, register
from pycalico.api.common import check_selector
from pycalico.api.kinds_bgp import duration_seconds, null_to_empty

DEFAULT_MIN_RECV = "10ms"
DEFAULT_MIN_SEND = "100ms"
DEFAULT_IDLE_SEND = "1m"
DEFAULT_MULTIPLIER = 5


def _whole_ms(value: str) -> str:
    secs = duration_seconds(value)
    ms = secs * 1000
    if ms <= 0 or abs(ms - round(ms)) > 1e-6:
        raise ValueError(
            f"invalid interval {value!r}: must be a whole number of milliseconds greater than 0"
        )
    return value


BFDInterval = Annotated[StrictStr, AfterValidator(_whole_ms)]


def interval_ms(text: str) -> int:
    """A validated BFD interval (``100ms``, ``1s``) in whole milliseconds."""
    return round(duration_seconds(text) * 1000)


class BFDInterface(Model):
    matchPattern: StrictStr = "*"
    minimumRecvInterval: BFDInterval = DEFAULT_MIN_RECV
    minimumSendInterval: BFDInterval = DEFAULT_MIN_SEND
    idleSendInterval: BFDInterval = DEFAULT_IDLE_SEND
    multiplier: Annotated[StrictInt, Field(ge=1, le=255)] = DEFAULT_MULTIPLIER

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        if not self.matchPattern or '"' in self.matchPattern or "\\" in self.matchPattern:
            problems.add(f"{path}.matchPattern", "must be a non-empty interface name or glob")


class BFDConfigurationSpec(Model):
    nodeSelector: StrictStr | None = None
    interfaces: list[BFDInterface] | None = None

    def check(self, path: str, problems: Problems) -> None:
        super().check(path, problems)
        if self.nodeSelector:
            check_selector(self.nodeSelector, f"{path}.nodeSelector", problems)


@register("BFDConfiguration", aliases=("bfdconfiguration", "bfdconfig", "bfdconfigs"))
class BFDConfiguration(Resource):
    """BFD timers for the interfaces of the nodes ``nodeSelector`` picks (empty = all)."""

    kind: str = "BFDConfiguration"
    spec: Annotated[BFDConfigurationSpec, BeforeValidator(null_to_empty)] = Field(
        default_factory=lambda: BFDConfigurationSpec.model_validate({})
    )
