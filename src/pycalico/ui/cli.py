"""The console command: ``python -m pycalico.ui`` (run by ``calicoctl ui``/``calico-lab ui``).

Owns argument handling and the listening policy: the console listens on loopback
(``127.0.0.1:9443``) unless ``--listen`` says otherwise, and refuses to start on any other
address without a token (``--token`` or env ``CALICO_CONSOLE_TOKEN``). The datastore comes
from the usual configuration (``--config``, ``DATASTORE_TYPE``, ...). ``--lab NAME`` reads
node status and runs live probes through ``calico-lab``; otherwise node status is this
host's calico-node state directory (``--status-dir``). Errors: one line, exit 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click

from pycalico.datastore import Datastore
from pycalico.errors import CalicoError
from pycalico.system.listen import is_loopback
from pycalico.ui.sources import (
    LabStatus,
    LiveMatrix,
    LocalStatus,
    ReportedStatus,
    StatusSource,
    default_state_dir,
    open_flow_source,
)

DEFAULT_LISTEN = "127.0.0.1:9443"
TOKEN_ENV = "CALICO_CONSOLE_TOKEN"


class ListenError(CalicoError, ValueError):
    """A bad ``--listen`` address, or a non-loopback one without a token."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ListenError(f"--listen: {text!r} is not HOST:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise ListenError(f"--listen: {text!r} has no host")
    return host, int(port)


def check_listen(text: str, token: str | None) -> tuple[str, int]:
    host, port = parse_listen(text)
    if not is_loopback(host) and not token:
        raise ListenError(
            f"--listen {text}: not a loopback address; a token is required (--token or {TOKEN_ENV})"
        )
    return host, port


def _store_opener(config_file: str | None) -> Callable[[], Datastore]:
    from pycalico.config import load_config
    from pycalico.datastore import open_datastore

    config = load_config(config_file)

    def open_store() -> Datastore:
        return open_datastore(config, create=False)

    open_store().close()  # fail now, not on the first page
    return open_store


@click.command("ui")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="HOST:PORT to serve.")
@click.option("--token", envvar=TOKEN_ENV, default=None, help=f"Access token (env {TOKEN_ENV}).")
@click.option("--lab", default=None, help="Read node status and live probes from this lab.")
@click.option("--status-dir", default=None, help="calico-node state directory (this host).")
@click.option("-c", "--config", "config_file", default=None, help="calicoctl.cfg-style file.")
def ui(
    listen: str, token: str | None, lab: str | None, status_dir: str | None, config_file: str | None
) -> None:
    """Serve the web console (read-only) until interrupted."""
    import uvicorn

    from pycalico.ui.app import Console, create_app

    try:
        host, port = check_listen(listen, token)
        open_store = _store_opener(config_file)
    except (CalicoError, OSError) as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    status: StatusSource
    live: LiveMatrix | None = None
    if lab:
        status = live = LabStatus(lab)
    else:
        status = ReportedStatus(open_store, LocalStatus(status_dir or default_state_dir()))
    console = Console(
        open_store=open_store,
        status=status,
        live=live,
        flow_source=open_flow_source(lab, config_file),
        token=token,
        title=f"pycalico console · lab {lab}" if lab else "pycalico console",
    )
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"pycalico console on http://{shown}:{port}/ (read-only; Ctrl-C to stop)")
    sys.stdout.flush()
    uvicorn.run(create_app(console), host=host, port=port, log_level="warning", access_log=False)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    ui()
