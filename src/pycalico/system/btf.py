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
raises :class:`BtfError`; results are cached per (path, struct, members) for the process;
the parse leaves nothing behind in the heap (the blob and the type index live in anonymous
mappings, unmapped when done).
"""

from __future__ import annotations

import functools
import mmap
import os
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


_Blob = bytes | mmap.mmap


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


def _record(blob: _Blob, at: int) -> _Type:
    name_off, info, ref = struct.unpack_from("<III", blob, at)
    return _Type(name_off, (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31), ref, at)


class Btf:
    """One parsed BTF blob (type records indexed by id; id 0 is ``void``). ``size``: the
    blob's valid length (default: all of it)."""

    def __init__(self, blob: _Blob, size: int | None = None) -> None:
        n = len(blob) if size is None else size
        if n < 24:
            raise BtfError("btf: too short for a header")
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", blob, 0
        )
        if magic != _MAGIC:
            raise BtfError(f"btf: bad magic {magic:#x}")
        self.blob = blob
        t0, self._s0 = hdr_len + type_off, hdr_len + str_off
        self._s1 = self._s0 + str_len
        if self._s1 > n or t0 + type_len > n:
            raise BtfError("btf: sections beyond the end of the blob")
        # Where each type's record starts (index: type id; 0, void, has none), in an
        # anonymous mapping: vmlinux has 100,000+ types, and memory malloc'ed here would
        # stay with the long-lived agent after the parse.
        self._at = mmap.mmap(-1, 4 * (type_len // 12 + 2))
        self.count = 1
        at, end = t0, t0 + type_len
        while at < end:
            struct.pack_into("<I", self._at, 4 * self.count, at)
            self.count += 1
            (info,) = struct.unpack_from("<I", blob, at + 4)
            kind = (info >> 24) & 0x1F
            at += 12 + _FIXED.get(kind, 0) + _PER_ENTRY.get(kind, 0) * (info & 0xFFFF)

    def close(self) -> None:
        self._at.close()

    def type(self, tid: int) -> _Type | None:
        """Type ``tid``'s record (None: void or out of range)."""
        if not 0 < tid < self.count:
            return None
        return _record(self.blob, struct.unpack_from("<I", self._at, 4 * tid)[0])

    def name(self, off: int) -> str:
        start = self._s0 + off
        end = self.blob.find(b"\0", start, self._s1)
        if end < 0:
            raise BtfError(f"btf: unterminated name at {off}")
        return bytes(self.blob[start:end]).decode(errors="replace")

    def struct_id(self, name: str) -> int:
        """The id of the (first) struct called ``name``."""
        for tid in range(1, self.count):
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
def member_offsets(
    struct_name: str, members: tuple[str, ...], path: str = VMLINUX
) -> tuple[int, ...]:
    """Byte offsets of ``members`` in the kernel's ``struct <struct_name>`` (one parse). The
    blob is read into an anonymous mapping, unmapped afterwards: nothing of its megabytes
    stays in the process's heap."""
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            buf = mmap.mmap(-1, max(size, 1))
            try:
                n = 0
                with memoryview(buf) as view:
                    while n < size:
                        with view[n:] as rest:
                            got = f.readinto(rest)
                        if not got:
                            break
                        n += got
                btf = Btf(buf, n)
                try:
                    tid = btf.struct_id(struct_name)
                    found = [btf.member_offset(tid, m) for m in members]
                finally:
                    btf.close()
            finally:
                buf.close()
    except OSError as e:
        raise BtfError(f"btf: {path}: {e.strerror or e}") from None
    missing = [m for m, off in zip(members, found, strict=True) if off is None]
    if missing:
        raise BtfError(f"btf: struct {struct_name} has no member {', '.join(missing)}")
    return tuple(off for off in found if off is not None)


def member_offset(struct_name: str, member: str, path: str = VMLINUX) -> int:
    """Byte offset of ``member`` in the kernel's ``struct <struct_name>``."""
    return member_offsets(struct_name, (member,), path)[0]
