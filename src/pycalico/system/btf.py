"""Where a field of a kernel struct lives, read from the kernel's own BTF.

A netfilter BPF program reads ``struct sk_buff`` directly (the verifier checks each load
against the kernel's BTF), so its bytecode needs the byte offset of a field in THIS kernel's
``sk_buff``; the layout changes between kernels and configs. The kernel publishes its type
information at ``/sys/kernel/btf/vmlinux`` (``CONFIG_DEBUG_INFO_BTF``).

Owns: :func:`member_offset` (the byte offset of a named member of a named struct, looking
through anonymous struct and union members, as C does), with the parse of the BTF blob
(:class:`Btf`) - only what that needs: the header, the type records' sizes, struct/union
members and the string section.

Invariants: read-only; a blob that is not BTF, or a struct or member that is not there,
raises :class:`BtfError`; results are cached per (path, struct, member) for the process.
"""

from __future__ import annotations

import array
import functools
import struct
from dataclasses import dataclass

from pycalico.errors import CalicoError

VMLINUX = "/sys/kernel/btf/vmlinux"
_MAGIC = 0xEB9F
_STRUCT, _UNION = 4, 5
_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG = 8, 9, 10, 11, 18
_MODIFIERS = {_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG}
#: Bytes after the 12-byte record, fixed (INT, ARRAY, VAR, DECL_TAG) and per vlen entry.
_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_PER_ENTRY = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}


class BtfError(CalicoError):
    """The BTF blob cannot be read, or lacks the struct or member asked for."""


@dataclass(frozen=True)
class _Type:
    name_off: int
    kind: int
    vlen: int
    kind_flag: bool
    ref: int  # size or referenced type id
    at: int  # offset of the record in the blob


def _record(blob: bytes, at: int) -> _Type:
    name_off, info, ref = struct.unpack_from("<III", blob, at)
    return _Type(name_off, (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31), ref, at)


class Btf:
    """One parsed BTF blob (type records indexed by id; id 0 is ``void``)."""

    def __init__(self, blob: bytes) -> None:
        if len(blob) < 24:
            raise BtfError("btf: too short for a header")
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", blob, 0
        )
        if magic != _MAGIC:
            raise BtfError(f"btf: bad magic {magic:#x}")
        self.blob = blob
        t0, self._s0 = hdr_len + type_off, hdr_len + str_off
        self._s1 = self._s0 + str_len
        if self._s1 > len(blob) or t0 + type_len > len(blob):
            raise BtfError("btf: sections beyond the end of the blob")
        # Where each type's record starts (index: type id; 0, void, has none): a compact
        # array, as vmlinux has 100,000+ types and this runs in a long-lived agent.
        self._at = array.array("I", [0])
        at, end = t0, t0 + type_len
        while at < end:
            self._at.append(at)
            info = int.from_bytes(blob[at + 4 : at + 8], "little")
            kind = (info >> 24) & 0x1F
            at += 12 + _FIXED.get(kind, 0) + _PER_ENTRY.get(kind, 0) * (info & 0xFFFF)

    def type(self, tid: int) -> _Type | None:
        """Type ``tid``'s record (None: void or out of range)."""
        return _record(self.blob, self._at[tid]) if 0 < tid < len(self._at) else None

    def name(self, off: int) -> str:
        start = self._s0 + off
        end = self.blob.index(b"\0", start, self._s1)
        return self.blob[start:end].decode(errors="replace")

    def struct_id(self, name: str) -> int:
        """The id of the (first) struct called ``name``."""
        for tid in range(1, len(self._at)):
            t = self.type(tid)
            if t is not None and t.kind == _STRUCT and t.name_off and self.name(t.name_off) == name:
                return tid
        raise BtfError(f"btf: no struct {name}")

    def _resolve(self, tid: int) -> _Type | None:
        t = self.type(tid)
        while t is not None and t.kind in _MODIFIERS:
            t = self.type(t.ref)
        return t

    def member_offset(self, tid: int, member: str) -> int | None:
        """Byte offset of ``member`` in struct/union ``tid`` (anonymous members searched)."""
        t = self._resolve(tid)
        if t is None or t.kind not in (_STRUCT, _UNION):
            return None
        for i in range(t.vlen):
            name_off, mtype, moff = struct.unpack_from("<III", self.blob, t.at + 12 + 12 * i)
            bits = int(moff & 0xFFFFFF if t.kind_flag else moff)
            if name_off and self.name(name_off) == member:
                return bits // 8
            if not name_off:
                inner = self.member_offset(mtype, member)
                if inner is not None:
                    return bits // 8 + inner
        return None


@functools.cache
def member_offset(struct_name: str, member: str, path: str = VMLINUX) -> int:
    """Byte offset of ``member`` in the kernel's ``struct <struct_name>``."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise BtfError(f"btf: {path}: {e.strerror or e}") from None
    btf = Btf(blob)
    off = btf.member_offset(btf.struct_id(struct_name), member)
    if off is None:
        raise BtfError(f"btf: struct {struct_name} has no member {member}")
    return off
