"""calicoctl command family: ``datastore migrate export | import | lock | unlock``.

Moves a whole cluster between datastores (e.g. SQLite → etcd): ``export`` writes every stored
object (API resources and IPAM internals alike) as one YAML ``List`` on stdout; ``import -f``
creates them in the configured (empty) datastore. Store-owned metadata (resourceVersion) is
dropped on export and re-assigned by the target; uid and creationTimestamp are kept.
``lock``/``unlock`` set ClusterInformation ``datastoreReady`` false/true (Calico's lock: the
CNI plugin refuses ADD and DEL while it is false; ``ipam split`` requires it).
Invariants: import validates every API resource first and writes nothing if any is invalid or
if the target already holds resources (unless ``--allow-non-empty``).
"""

from __future__ import annotations

import sys
from typing import Any

import click
import yaml

from pycalico.api import ValidationFailed, decode, load_documents, lookup
from pycalico.api.loader import ManifestError
from pycalico.ctl.common import config_option, fail, open_store, run_reporting_errors
from pycalico.ctl.validate import read_source
from pycalico.datastore import AlreadyExists, DatastoreError
from pycalico.datastore.base import ROOT

EXPORT_KIND = "List"


def export_objects(config_file: str | None) -> list[dict[str, Any]]:
    with open_store(config_file, create=False) as ds:
        try:
            items = ds.list_prefix(ROOT).items
        except DatastoreError as e:
            fail(f"Failed to export: {e}")
    out = []
    for obj in items:
        meta = dict(obj.get("metadata", {}))
        meta.pop("resourceVersion", None)
        out.append(dict(obj, metadata=meta))
    return out


@click.group("datastore")
def datastore() -> None:
    """Datastore management: migrate a cluster between datastores."""


@datastore.group("migrate")
def migrate() -> None:
    """Export all data from one datastore and import it into another."""


@migrate.command("export")
@config_option
def export(config_file: str | None) -> None:
    """Write every stored object to stdout as a YAML List."""
    items = export_objects(config_file)
    doc = {"apiVersion": "v1", "kind": EXPORT_KIND, "metadata": {}, "items": items}
    sys.stdout.write(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))


@migrate.command("import")
@click.option("-f", "--filename", required=True, help="File written by 'migrate export' or '-'.")
@click.option("--allow-non-empty", is_flag=True, help="Import into a datastore that has data.")
@config_option
def import_(filename: str, allow_non_empty: bool, config_file: str | None) -> None:
    """Create every object of an export in the configured datastore."""
    try:
        source, text = read_source(filename)
        objs = load_documents(text, source=source)
    except ManifestError as e:
        fail(f"Failed to import: {e}")
    except ValidationFailed as e:
        fail("Failed to import: " + "; ".join(str(p) for p in e.problems))
    problems: list[str] = []
    for obj in objs:
        if lookup(str(obj.get("apiVersion", "")), str(obj.get("kind", ""))) is None:
            continue  # IPAM internals (IPAMBlock, IPAMHandle...) are stored as exported
        try:
            decode(obj)
        except ValidationFailed as e:
            problems.extend(str(p) for p in e.problems)
    if problems:
        fail("Failed to import; nothing was written:\n  " + "\n  ".join(problems))
    with open_store(config_file) as ds:
        try:
            if ds.list_prefix(ROOT).items and not allow_non_empty:
                fail("Failed to import: the target datastore is not empty")
            created = 0
            for obj in objs:
                meta = dict(obj.get("metadata", {}))
                meta.pop("resourceVersion", None)
                try:
                    ds.create(dict(obj, metadata=meta), keep_identity=True)
                    created += 1
                except AlreadyExists:
                    if not allow_non_empty:
                        raise
        except DatastoreError as e:
            fail(f"Failed to import: {e}")
    click.echo(f"Successfully imported {created} object(s)")


COMMANDS: list[click.Command] = [datastore]


@migrate.command("lock")
@config_option
def lock(config_file: str | None) -> None:
    """Lock the datastore for migration (CNI ADD/DEL wait until it is unlocked)."""
    _set_ready(config_file, False)
    click.echo("Datastore locked.")


@migrate.command("unlock")
@config_option
def unlock(config_file: str | None) -> None:
    """Unlock the datastore after migration."""
    _set_ready(config_file, True)
    click.echo("Datastore unlocked.")


def _set_ready(config_file: str | None, ready: bool) -> None:
    from pycalico.ipam.split import set_datastore_ready

    def go() -> None:
        with open_store(config_file, create=False) as ds:
            set_datastore_ready(ds, ready)

    run_reporting_errors(go)
