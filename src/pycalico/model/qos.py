"""Pod QoS controls (Calico 3.30): the ``qos.projectcalico.org/*`` pod annotations and the
WorkloadEndpoint ``spec.qosControls`` they become.

Owns: :class:`QoSControls` (the parsed, defaulted controls of one endpoint),
:func:`parse_quantity` (Kubernetes resource quantities: ``10M``, ``1Gi``, ``1.01k``, ``5e3``),
:func:`controls_from_annotations` (annotations -> ``spec.qosControls`` dict, what Calico's
pod-to-WorkloadEndpoint conversion does) and :func:`check_controls` /
:func:`controls_from_spec` (the WorkloadEndpoint field, validated and defaulted).

Units (Calico's): bandwidth and peakrate in bits/s, burst in bits, minburst in BYTES,
packet rate in packets/s, packet burst in packets, max connections a count. Limits are
Calico's (``[lo, hi]``, see :data:`LIMITS`); a value of 0 (or absent) means "not set".

Invariants and where pycalico differs (stricter, never looser):
- Calico logs a bad annotation and clamps it to the limit; pycalico rejects it with an
  error naming the annotation (or the ``spec.qosControls.<field>``) and the reason, so the
  CNI ADD / ``calico-lab pod annotate`` / ``calicoctl apply`` fails and nothing is written.
- Dependencies: a burst needs its bandwidth, a peakrate needs its bandwidth and must exceed
  it, a minburst needs its peakrate, a packet burst needs its packet rate.
- Defaults (Calico's converter): burst 4Gi bits (4294967296) when a bandwidth is set, packet
  burst 5 when a packet rate is set. The minburst default (the interface MTU) is the
  dataplane's (:mod:`pycalico.felix.dataplane.qos`).
- ``kubernetes.io/ingress-bandwidth``/``egress-bandwidth`` are read too; the Calico
  annotations win when both are present.
- ``dscp`` (Calico 3.31) is accepted in the spec and carried, but not programmed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import fields
from decimal import Decimal, InvalidOperation
from typing import Any

from pycalico.model.types import ModelError, QoSControls

PREFIX = "qos.projectcalico.org/"
K8S_INGRESS_BANDWIDTH = "kubernetes.io/ingress-bandwidth"
K8S_EGRESS_BANDWIDTH = "kubernetes.io/egress-bandwidth"
DEFAULT_BURST = 4 * 1024**3  # bits (512 MiB)
DEFAULT_PACKET_BURST = 5
_U32 = 2**32 - 1

#: spec.qosControls field -> (min, max), Calico's limits.
LIMITS: dict[str, tuple[int, int]] = {}
for _d in ("ingress", "egress"):
    LIMITS.update(
        {
            f"{_d}Bandwidth": (1000, 10**15),
            f"{_d}Burst": (1000, _U32 * 8),
            f"{_d}Peakrate": (1010, 1010 * 10**12),
            f"{_d}Minburst": (1000, 100 * 10**6),
            f"{_d}PacketRate": (1, 10_000),
            f"{_d}PacketBurst": (1, 10_000),
            f"{_d}MaxConnections": (1, _U32),
        }
    )

_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(
    r"^([+-]?)(\d+(?:\.\d*)?|\.\d+)(?:(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE]([+-]?\d+))?$"
)


def parse_quantity(text: str) -> int:
    """A Kubernetes resource quantity as an integer, rounded up as ``Quantity.Value()``
    does (``1.5k`` = 1500, ``1Mi`` = 1048576, ``1e3`` = 1000, ``500m`` = 1). ValueError
    for anything else (units such as ``10Mbit`` are not quantities)."""
    m = _QUANTITY.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a quantity (e.g. 10M, 1Gi, 1.5k, 5e3)")
    sign, number, suffix, exp = m.groups()
    try:
        scale = _SUFFIX[suffix or ""] if exp is None else Decimal(10) ** int(exp)
        value = Decimal(number) * scale
    except (InvalidOperation, OverflowError) as e:
        raise ValueError(f"{text!r} is not a quantity") from e
    out = math.ceil(value)
    return -out if sign == "-" else out


FIELDS = tuple(f.name for f in fields(QoSControls) if f.name != "dscp")


def _dependency_problems(values: Mapping[str, int]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for d in ("ingress", "egress"):
        bw, peak = values.get(f"{d}Bandwidth", 0), values.get(f"{d}Peakrate", 0)
        if values.get(f"{d}Burst", 0) and not bw:
            out.append((f"{d}Burst", f"{d}Bandwidth must be specified when {d}Burst is"))
        if peak and (not bw or peak <= bw):
            out.append((f"{d}Peakrate", f"{d}Peakrate must be greater than {d}Bandwidth"))
        if values.get(f"{d}Minburst", 0) and not peak:
            out.append((f"{d}Minburst", f"{d}Peakrate must be specified when {d}Minburst is"))
        if values.get(f"{d}PacketBurst", 0) and not values.get(f"{d}PacketRate", 0):
            out.append(
                (f"{d}PacketBurst", f"{d}PacketRate must be specified when {d}PacketBurst is")
            )
    return out


def _range_problem(name: str, value: int) -> str | None:
    lo, hi = LIMITS[name]
    if value == 0:
        return None
    if value < lo:
        return f"{value} is too small (the minimum is {lo})"
    if value > hi:
        return f"{value} is too large (the maximum is {hi})"
    return None


def check_controls(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems of a ``spec.qosControls`` dict as (field, reason); [] when valid."""
    out: list[tuple[str, str]] = []
    values: dict[str, int] = {}
    for name, raw in spec.items():
        if name == "dscp":
            if not isinstance(raw, int | str) or isinstance(raw, bool):
                out.append((name, "must be a number (0-63) or a DSCP name"))
            continue
        if name not in LIMITS:
            out.append((name, "unknown field"))
            continue
        if raw is None:
            continue
        if not isinstance(raw, int) or isinstance(raw, bool):
            out.append((name, f"must be an integer, got {raw!r}"))
            continue
        why = _range_problem(name, raw)
        if why:
            out.append((name, why))
        values[name] = raw
    return out + _dependency_problems(values)


def controls_from_spec(spec: Any, where: str = "spec.qosControls") -> QoSControls | None:
    """The defaulted controls of a stored ``spec.qosControls`` (None when nothing is set).
    Raises :class:`ModelError` naming ``<where>.<field>`` for an invalid one."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise ModelError(f"{where}: must be a mapping", field=where, reason="must be a mapping")
    problems = check_controls(spec)
    if problems:
        fld, why = problems[0]
        raise ModelError(f"{where}.{fld}: {why}", field=f"{where}.{fld}", reason=why)
    vals = {k: int(spec.get(k) or 0) for k in FIELDS}
    for d in ("ingress", "egress"):
        if vals[f"{d}Bandwidth"] and not vals[f"{d}Burst"]:
            vals[f"{d}Burst"] = DEFAULT_BURST
        if vals[f"{d}PacketRate"] and not vals[f"{d}PacketBurst"]:
            vals[f"{d}PacketBurst"] = DEFAULT_PACKET_BURST
    dscp = spec.get("dscp")
    out = QoSControls(**vals, dscp="" if dscp is None else str(dscp))
    return out if out != QoSControls() else None


def controls_from_annotations(annotations: Mapping[str, str]) -> dict[str, Any] | None:
    """Pod annotations -> the ``spec.qosControls`` dict Calico's conversion builds (with its
    defaults), or None when no QoS annotation is present. Raises :class:`ModelError` naming
    the annotation for a bad value (see the module docstring) or an unknown
    ``qos.projectcalico.org/`` key."""
    vals: dict[str, int] = {}
    source: dict[str, str] = {}
    keys = [K8S_INGRESS_BANDWIDTH, K8S_EGRESS_BANDWIDTH]
    keys += sorted(k for k in annotations if k.startswith(PREFIX))
    for key in keys:
        if key not in annotations:
            continue
        if key == K8S_INGRESS_BANDWIDTH:
            name = "ingressBandwidth"
        elif key == K8S_EGRESS_BANDWIDTH:
            name = "egressBandwidth"
        else:
            name = key[len(PREFIX) :]
        if name == "dscp":
            raise _annotation_error(key, "DSCP is not supported by pycalico")
        if name not in LIMITS:
            raise _annotation_error(key, f"unknown QoS annotation (known: {', '.join(FIELDS)})")
        if key.startswith(PREFIX) or name not in source:  # Calico's annotation wins
            try:
                value = parse_quantity(str(annotations[key]))
            except ValueError as e:
                raise _annotation_error(key, str(e)) from None
            lo, hi = LIMITS[name]
            if not lo <= value <= hi:
                raise _annotation_error(key, f"{value} is out of range [{lo}, {hi}]")
            vals[name] = value
            source[name] = key
    if not vals:
        return None
    for name, why in _dependency_problems(vals):
        raise _annotation_error(source[name], why)
    defaulted = controls_from_spec(vals)
    return defaulted.to_spec() if defaulted is not None else None


def _annotation_error(key: str, why: str) -> ModelError:
    return ModelError(f"annotation {key}: {why}", field=key, reason=why)
