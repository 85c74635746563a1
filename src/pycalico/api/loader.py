"""Bounded, safe parsing of manifest text (YAML or JSON) into plain Python documents.

Everything a user or a file hands to calicoctl (``-f FILE``, ``-f -``, ``datastore migrate
import``) goes through :func:`parse_documents` (text) or :func:`text_of` (raw bytes) first.
Invariants (issue 19, "bounded, safe input everywhere"):

- Input is at most :data:`MAX_MANIFEST_BYTES`; bytes must be UTF-8 (an optional BOM is
  dropped). :func:`read_manifest` reads at most the cap + 1 bytes, so ``-f /dev/zero`` fails
  at once instead of filling memory.
- YAML is composed to a node graph and checked *before* anything is constructed:
  aliases are allowed (they are legal YAML, and Calico's Go decoder accepts them) but at most
  :data:`MAX_ALIASES` per document, never recursive, and the document as it would be
  expanded may hold at most :data:`MAX_EXPANDED_NODES` nodes (a "billion laughs" alias bomb
  is rejected in microseconds rather than expanded to gigabytes); nesting is at most
  :data:`MAX_DEPTH` deep; a mapping may not repeat a key (the error names the key's path,
  ``spec.selector: duplicate key``), as Calico's strict decoder rejects duplicates.
- Every failure raises :class:`ManifestError` (a :class:`~pycalico.errors.CalicoError`); no
  other exception escapes for any input, and messages quote input only through
  :func:`excerpt` (bounded, control characters escaped).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

import yaml

from pycalico.errors import CalicoError, excerpt

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_ALIASES = 100
MAX_EXPANDED_NODES = 1_000_000
MAX_DEPTH = 100

_MERGE_TAG = "tag:yaml.org,2002:merge"


class ManifestError(CalicoError, ValueError):
    """Manifest input that cannot be parsed safely (size, encoding, syntax, aliases, keys)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


def text_of(data: bytes, source: str = "<input>") -> str:
    """Decode manifest bytes: size-capped, strict UTF-8 (BOM dropped)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(source, f"input is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(
            source, f"input is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None
    return text.removeprefix("\ufeff")


def read_manifest(stream: IO[bytes], source: str) -> str:
    """Read a manifest from a binary stream, never more than the cap + 1 bytes."""
    try:
        data = stream.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise ManifestError(source, f"cannot read: {e.strerror or e}") from None
    return text_of(data, source)


def _key_text(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return str(node.value)
    return f"<{type(node).__name__}>"


def _child_path(path: str, key: str) -> str:
    key = excerpt(key, 60)
    return f"{path}.{key}" if path else key


def _check_node(root: yaml.Node, source: str) -> None:
    """Depth, duplicate keys, alias count and expanded size of one composed document."""
    aliases = 0
    seen: set[int] = set()  # ids of nodes already walked (a second visit is an alias)
    # Iterative walk (no recursion limit to hit); each entry: node, path, depth.
    stack: list[tuple[yaml.Node, str, int]] = [(root, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if id(node) in seen:
            aliases += 1
            if aliases > MAX_ALIASES:
                raise ManifestError(source, f"more than {MAX_ALIASES} YAML aliases")
            continue
        seen.add(id(node))
        if depth > MAX_DEPTH:
            raise ManifestError(source, f"{path or 'document'}: nested deeper than {MAX_DEPTH}")
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for k, v in node.value:
                if k.tag == _MERGE_TAG:
                    stack.append((v, path, depth + 1))
                    continue
                if isinstance(k, yaml.ScalarNode):
                    ident = f"{k.tag}\0{k.value}"
                    if ident in keys:
                        where = _child_path(path, _key_text(k))
                        line = k.start_mark.line + 1 if k.start_mark else 0
                        raise ManifestError(source, f"{where}: duplicate key (line {line})")
                    keys.add(ident)
                else:
                    stack.append((k, path, depth + 1))
                stack.append((v, _child_path(path, _key_text(k)), depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                stack.append((item, f"{path}[{i}]", depth + 1))
    if aliases:
        _check_expanded_size(root, source)


def _check_expanded_size(root: yaml.Node, source: str) -> None:
    """Nodes the document would hold with every alias expanded (memoised, cycle-checked)."""
    size: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        nid = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                children += [k, v]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if done:
            active.discard(nid)
            total = 1 + sum(size[id(c)] for c in children)
            if total > MAX_EXPANDED_NODES:
                raise ManifestError(
                    source, f"YAML aliases expand to more than {MAX_EXPANDED_NODES} nodes"
                )
            size[nid] = total
            continue
        if nid in size:
            continue
        if nid in active:
            raise ManifestError(source, "recursive YAML alias")
        active.add(nid)
        stack.append((node, True))
        for c in children:
            if id(c) in active:
                raise ManifestError(source, "recursive YAML alias")
            if id(c) not in size:
                stack.append((c, False))


def _check_depth(doc: Any, source: str) -> None:
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ManifestError(source, f"nested deeper than {MAX_DEPTH}")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


class _DuplicateJsonKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateJsonKey(k)
        out[k] = v
    return out


def _yaml_documents(text: str, loader_cls: Any, source: str) -> Iterator[Any]:
    loader = loader_cls(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            _check_node(node, source)
            yield loader.construct_document(node)
    finally:
        loader.dispose()


def parse_documents(text: str, loader_cls: Any, source: str = "<input>") -> list[Any]:
    """YAML (multi-document) or JSON text -> Python documents, within the limits above."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(source, f"input is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        if text.lstrip().startswith(("{", "[")):
            try:
                doc = json.loads(text, object_pairs_hook=_no_duplicates)
            except (json.JSONDecodeError, _DuplicateJsonKey):
                pass  # YAML flow style, or a duplicate key whose path the YAML pass names
            else:
                _check_depth(doc, source)
                return [doc]
        return list(_yaml_documents(text, loader_cls, source))
    except ManifestError:
        raise
    except yaml.YAMLError as e:
        raise ManifestError(source, f"cannot parse YAML/JSON: {excerpt(str(e), 400)}") from None
    except RecursionError:
        raise ManifestError(source, f"nested deeper than {MAX_DEPTH}") from None
    except Exception as e:
        raise ManifestError(
            source, f"cannot parse YAML/JSON: {type(e).__name__}: {excerpt(str(e), 200)}"
        ) from None
