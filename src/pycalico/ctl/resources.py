"""calicoctl command family: resource management.

``create``, ``apply``, ``replace``, ``delete``, ``get``, ``patch``, ``label`` with Calico's
flags, kind aliases, output formats, messages and exit codes. Invariants: input files are fully
decoded and validated before anything is written (one invalid document ⇒ nothing written);
datastore and validation failures are reported as one clear line and exit code 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click
import yaml

from pycalico.api import KINDS, KindInfo, Resource, ValidationFailed, decode_all, resolve_kind
from pycalico.api.loader import ManifestError
from pycalico.client import ResourceClient, describe, kind_info_of
from pycalico.ctl.columns import columns_for, render_table
from pycalico.ctl.common import config_option, fail, open_store
from pycalico.ctl.validate import format_problem, manifest_targets, read_source, warning_lines
from pycalico.datastore import (
    AlreadyExists,
    Conflict,
    DatastoreError,
    NotFound,
    Unavailable,
)
from pycalico.errors import CalicoError, excerpt

Obj = dict[str, Any]


def error_text(e: Exception, info: KindInfo | None = None, name: str = "", ns: str = "") -> str:
    what = describe(info, name, ns) if info else ""
    if isinstance(e, NotFound):
        return f"resource does not exist: {what}"
    if isinstance(e, AlreadyExists):
        return f"resource already exists: {what}"
    if isinstance(e, Conflict):
        return f"update conflict: {what}: {e}"
    if isinstance(e, Unavailable):
        return f"datastore unavailable: {e}"
    return str(e)


# --- reading manifests -----------------------------------------------------------------------


def read_manifests(filename: str, recursive: bool) -> list[Resource]:
    """Every resource in ``filename`` (file, directory or '-'), validated; exits on problems."""
    files = manifest_targets(filename, recursive)
    if not files:
        fail(f"Failed to execute command: no manifests found in {excerpt(filename)}")
    sources = []
    for f in files:
        try:
            sources.append(read_source(f))
        except ManifestError as e:
            fail(f"Failed to execute command: {e}")
    out: list[Resource] = []
    problems: list[str] = []
    for src, text in sources:
        try:
            out.extend(decode_all(text, source=src))
        except ValidationFailed as e:
            problems.extend(format_problem(p, src) for p in e.problems)
    if problems:
        click.echo("Failed to execute command: invalid resource(s); nothing was written:", err=True)
        for line in problems:
            click.echo(f"  {line}", err=True)
        sys.exit(1)
    return out


def resolve(kind_word: str) -> KindInfo:
    kind = resolve_kind(kind_word)
    if kind is None:
        fail(f"Failed to execute command: resource type '{kind_word}' is not supported")
    return KINDS[kind]


# --- the write commands ----------------------------------------------------------------------

_PAST = {"create": "created", "apply": "applied", "replace": "replaced", "delete": "deleted"}


def _report(action: str, resources: list[Resource], handled: int, error: str | None) -> None:
    kinds = {r.kind for r in resources}
    single = next(iter(kinds)) if len(kinds) == 1 else None
    what = f"'{single}' resource(s)" if single else "resource(s)"
    if error is None:
        click.echo(f"Successfully {_PAST[action]} {handled} {what}")
        return
    if handled:
        many = f"'{single}' resources" if single else "resources"
        click.echo(
            f"Partial success: {_PAST[action]} the first {handled} out of {len(resources)} {many}:"
        )
    fail(f"Hit error: {error}")


def _run_writes(
    action: str,
    resources: list[Resource],
    op: Callable[[Resource], object],
    skip: type[Exception] | None = None,
) -> None:
    handled = 0
    for res in resources:
        info = kind_info_of(res)
        try:
            op(res)
        except CalicoError as e:
            if skip is not None and isinstance(e, skip):
                handled += 1
                continue
            ns = res.metadata.namespace or ("default" if info.namespaced else "")
            why = error_text(e, info, res.metadata.name, ns)
            err = f"Failed to {action} '{res.kind}' resource: [{why}]"
            _report(action, resources, handled, err)
        handled += 1
    _report(action, resources, handled, None)


def _write_command(action: str) -> click.Command:
    @click.command(action)
    @click.option("-f", "--filename", required=True, help="File, directory or '-' with resources.")
    @click.option("-R", "--recursive", is_flag=True, help="Process directories recursively.")
    @click.option("-n", "--namespace", default=None, help="Namespace for namespaced resources.")
    @click.option("--skip-exists", is_flag=True, help="(create) Treat existing resources as done.")
    @config_option
    def cmd(
        filename: str,
        recursive: bool,
        namespace: str | None,
        config_file: str | None,
        skip_exists: bool = False,
    ) -> None:
        resources = read_manifests(filename, recursive)
        for line in warning_lines(resources):
            click.echo(line, err=True)
        with open_store(config_file) as ds:
            client = ResourceClient(ds)
            if action == "create":
                skip = AlreadyExists if skip_exists else None
                _run_writes(action, resources, lambda r: client.create(r, namespace), skip)
            elif action == "apply":
                _run_writes(action, resources, lambda r: client.apply(r, namespace))
            else:
                _run_writes(action, resources, lambda r: client.replace(r, namespace))

    cmd.help = {
        "create": "Create resources from a file; fails for existing ones (see --skip-exists).",
        "apply": "Create or update resources from a file.",
        "replace": "Replace existing resources (CAS on resourceVersion when given).",
    }[action]
    if action != "create":
        cmd.params = [p for p in cmd.params if p.name != "skip_exists"]
    return cmd


@click.command("delete")
@click.argument("kind", required=False)
@click.argument("names", nargs=-1)
@click.option("-f", "--filename", default=None, help="File, directory or '-' with resources.")
@click.option("-R", "--recursive", is_flag=True, help="Process directories recursively.")
@click.option("-n", "--namespace", default=None, help="Namespace of namespaced resources.")
@click.option("-s", "--skip-not-exists", is_flag=True, help="Treat missing resources as deleted.")
@config_option
def delete(
    kind: str | None,
    names: tuple[str, ...],
    filename: str | None,
    recursive: bool,
    namespace: str | None,
    skip_not_exists: bool,
    config_file: str | None,
) -> None:
    """Delete resources named on the command line or in a file."""
    targets: list[tuple[KindInfo, str, str, str | None]] = []
    if filename:
        for res in read_manifests(filename, recursive):
            info = kind_info_of(res)
            ns = res.metadata.namespace or namespace or "" if info.namespaced else ""
            targets.append((info, res.metadata.name, ns, res.metadata.resourceVersion))
    elif kind and names:
        info = resolve(kind)
        targets = [(info, n, namespace or "", None) for n in names]
    else:
        fail("Failed to execute command: give KIND NAME... or -f FILE")
    handled = 0
    kinds = {t[0].kind for t in targets}
    single = next(iter(kinds)) if len(kinds) == 1 else None
    what = f"'{single}' resource(s)" if single else "resource(s)"
    with open_store(config_file, create=False) as ds:
        client = ResourceClient(ds)
        for info, name, ns, rv in targets:
            try:
                client.delete(info, name, ns, revision=rv)
            except NotFound:
                if not skip_not_exists:
                    if handled:
                        click.echo(
                            f"Partial success: deleted the first {handled} out of "
                            f"{len(targets)} resources:"
                        )
                    fail(
                        f"Failed to delete '{info.kind}' resource: "
                        f"[{error_text(NotFound(), info, name, ns)}]"
                    )
            except DatastoreError as e:
                fail(f"Failed to delete '{info.kind}' resource: [{error_text(e, info, name, ns)}]")
            handled += 1
    click.echo(f"Successfully deleted {handled} {what}")


# --- get ----------------------------------------------------------------------------------------


def _path_get(obj: Any, path: str) -> str:
    cur = obj
    for part in [p for p in path.strip().lstrip(".").split(".") if p]:
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return "<none>"
    if cur is None:
        return "<none>"
    if isinstance(cur, (dict, list)):
        return json.dumps(cur, separators=(",", ":"))
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def _column_path(heading: str, template: str) -> str:
    """The field path of a custom column: ``.a.b`` or the template form ``{.a.b}``."""
    t = template.strip()
    if t.startswith("{") or t.endswith("}"):
        if not (t.startswith("{") and t.endswith("}")) or t.count("{") != 1 or t.count("}") != 1:
            fail(
                f"Failed to execute command: custom-columns: column {excerpt(heading)}: "
                f"unterminated or unbalanced template {excerpt(template)}"
            )
        t = t[1:-1].strip()
    if not t or "{" in t or "}" in t or not heading:
        fail(
            "Failed to execute command: custom-columns: invalid column "
            f"{excerpt(heading)}:{excerpt(template)} (want HEADING:.field.path)"
        )
    return t


def _path_getter(path: str) -> Callable[[Obj], str]:
    return lambda o: _path_get(o, path)


def format_objects(
    info: KindInfo, objs: list[Obj], output: str, all_namespaces: bool, single: bool
) -> str:
    if output in ("yaml", "json"):
        payload: Any
        if single and len(objs) == 1:
            payload = objs[0]
        else:
            payload = {
                "apiVersion": info.api_version,
                "items": objs,
                "kind": f"{info.kind}List",
                "metadata": {},
            }
        if output == "json":
            return json.dumps(payload, indent=2)
        return yaml.safe_dump(payload, sort_keys=False, default_flow_style=False).rstrip("\n")
    if output == "name":
        return "\n".join(o["metadata"]["name"] for o in objs)
    if output.startswith("custom-columns="):
        cols: list[tuple[str, Callable[[Obj], str]]] = []
        known = {h: f for h, f in columns_for(info.kind, True, True, info.namespaced)}
        for spec in output.split("=", 1)[1].split(","):
            if ":" in spec:
                heading, path = spec.split(":", 1)
                cols.append((heading, _path_getter(_column_path(heading, path))))
            elif spec.upper() in known:
                cols.append((spec.upper(), known[spec.upper()]))
            else:
                fail(f"Failed to execute command: unknown column {spec!r} for {info.kind}")
    elif output in ("ps", "wide"):
        cols = columns_for(info.kind, output == "wide", all_namespaces, info.namespaced)
    else:
        fail(f"Failed to execute command: unrecognized output format '{output}'")
    rows = [[f(o) for _, f in cols] for o in objs]
    return render_table(rows, [h for h, _ in cols])


@click.command("get")
@click.argument("kind", required=False)
@click.argument("names", nargs=-1)
@click.option("-f", "--filename", default=None, help="File with resources to get.")
@click.option("-R", "--recursive", is_flag=True, help="Process directories recursively.")
@click.option("-o", "--output", default="ps", help="ps|wide|yaml|json|name|custom-columns=...")
@click.option("-n", "--namespace", default=None, help="Namespace of namespaced resources.")
@click.option("-A", "--all-namespaces", is_flag=True, help="List across all namespaces.")
@config_option
def get(
    kind: str | None,
    names: tuple[str, ...],
    filename: str | None,
    recursive: bool,
    output: str,
    namespace: str | None,
    all_namespaces: bool,
    config_file: str | None,
) -> None:
    """Display resources."""
    wanted: list[tuple[KindInfo, str | None, str | None]] = []
    if filename:
        for res in read_manifests(filename, recursive):
            info = kind_info_of(res)
            wanted.append((info, res.metadata.name, res.metadata.namespace or namespace))
    elif kind:
        info = resolve(kind)
        if names:
            wanted = [(info, n, namespace) for n in names]
        else:
            ns = None if all_namespaces else (namespace or "default")
            wanted = [(info, None, ns)]
    else:
        fail("Failed to execute command: give a KIND (e.g. ippools) or -f FILE")
    by_kind: dict[str, tuple[KindInfo, list[Obj], bool]] = {}
    with open_store(config_file, create=False) as ds:
        client = ResourceClient(ds)
        for info, name, ns in wanted:
            try:
                if name is None:
                    objs = client.list(info, ns)
                else:
                    objs = [client.get(info, name, ns or "")]
            except NotFound:
                fail(
                    f"Failed to get resources: {error_text(NotFound(), info, name or '', ns or '')}"
                )
            except DatastoreError as e:
                fail(f"Failed to get resources: {error_text(e, info)}")
            key = f"{info.api_version}/{info.kind}"
            entry = by_kind.setdefault(key, (info, [], name is not None))
            entry[1].extend(objs)
    chunks = []
    for info, objs, single in by_kind.values():
        objs.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        chunks.append(
            format_objects(info, objs, output, all_namespaces, single and len(names) <= 1)
        )
    text = "\n".join(c for c in chunks if c)
    if text:
        click.echo(text)


# --- patch and label ------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _modify(
    config_file: str | None,
    info: KindInfo,
    name: str,
    namespace: str,
    change: Callable[[Obj], Obj],
    verb: str,
) -> None:
    with open_store(config_file, create=False) as ds:
        try:
            ResourceClient(ds).modify(info, name, namespace, change)
        except ValidationFailed as e:
            fail(
                f"Failed to {verb} '{info.kind}' resource: " + "; ".join(str(p) for p in e.problems)
            )
        except CalicoError as e:
            fail(
                f"Failed to {verb} '{info.kind}' resource: [{error_text(e, info, name, namespace)}]"
            )


@click.command("patch")
@click.argument("kind")
@click.argument("name")
@click.option("-p", "--patch", "patch_text", required=True, help="JSON merge patch to apply.")
@click.option("-n", "--namespace", default="", help="Namespace of namespaced resources.")
@config_option
def patch(kind: str, name: str, patch_text: str, namespace: str, config_file: str | None) -> None:
    """Patch a resource with a JSON (merge) patch."""
    info = resolve(kind)
    try:
        patch_obj = json.loads(patch_text)
    except json.JSONDecodeError as e:
        try:
            patch_obj = yaml.safe_load(patch_text)
        except yaml.YAMLError:
            fail(f"Failed to execute command: invalid patch: {e}")
    if not isinstance(patch_obj, dict):
        fail("Failed to execute command: the patch must be a JSON object")

    def change(cur: Obj) -> Obj:
        new: Obj = merge_patch(cur, patch_obj)
        return new

    _modify(config_file, info, name, namespace, change, "patch")
    click.echo(f"Successfully patched 1 '{info.kind}' resource")


@click.command("label")
@click.argument("kind")
@click.argument("name")
@click.argument("label")
@click.option("--overwrite", is_flag=True, help="Overwrite the value of an existing label.")
@click.option("--remove", is_flag=True, help="Remove the label.")
@click.option("-n", "--namespace", default="", help="Namespace of namespaced resources.")
@config_option
def label(
    kind: str,
    name: str,
    label: str,
    overwrite: bool,
    remove: bool,
    namespace: str,
    config_file: str | None,
) -> None:
    """Add, update (--overwrite) or remove (--remove) a label: LABEL is key=value or key."""
    info = resolve(kind)
    key, eq, value = label.partition("=")
    if not remove and not eq:
        fail("Failed to execute command: label must be key=value (or use --remove)")

    def change(cur: Obj) -> Obj:
        labels = dict(cur.get("metadata", {}).get("labels") or {})
        if remove:
            if key not in labels:
                raise NotFound(f"label {key!r} not found")
            labels.pop(key)
        else:
            if key in labels and labels[key] != value and not overwrite:
                raise AlreadyExists(f"label {key!r} already set to {labels[key]!r}")
            labels[key] = value
        new = dict(cur, metadata=dict(cur["metadata"], labels=labels))
        return new

    with open_store(config_file, create=False) as ds:
        try:
            ResourceClient(ds).modify(info, name, namespace, change)
        except ValidationFailed as e:
            fail("Failed to update label: " + "; ".join(str(p) for p in e.problems))
        except (NotFound, AlreadyExists) as e:
            msg = str(e) if str(e) else error_text(e, info, name, namespace)
            if isinstance(e, AlreadyExists):
                msg += "; use --overwrite to change it"
            fail(f"Failed to update label: {msg}")
        except CalicoError as e:
            fail(f"Failed to update label: {error_text(e, info, name, namespace)}")
    if remove:
        click.echo(f"Successfully removed label {key} from {info.kind.lower()} {name}")
    else:
        click.echo(f"Successfully set label {key} on {info.kind.lower()} {name}")


COMMANDS: list[click.Command] = [
    _write_command("create"),
    _write_command("apply"),
    _write_command("replace"),
    delete,
    get,
    patch,
    label,
]
