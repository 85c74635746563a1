"""The diagnostics bundle of ``calicoctl node diags``: one ``.tar.gz`` to attach to a bug.

Owns: what a bundle holds and how it is collected. Items (each a file under
``calico-diags/`` in the archive): versions, the host check, our environment variables and
configuration files (redacted, :mod:`pycalico.diag.redact`), the node's ``status.json`` and
rendered ``bird.cfg`` from its state directory, BIRD's protocols (over its control socket),
the nft ruleset, links, addresses, routes, rules, neighbours and the VXLAN FDB of both
families, conntrack counters, the sysctls pycalico sets, and the tail of every log file in
the log directory. ``errors.txt`` lists every item that could not be collected and why.

Invariants: read-only on the host; a failing item never aborts the bundle (it is recorded);
secrets never enter the archive; the archive appears atomically (written to a temporary
name in the destination directory, then renamed) and is readable by its owner only.
"""

from __future__ import annotations

import functools
import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pycalico import __version__
from pycalico.bgp.control import BirdControl
from pycalico.diag.redact import redact_env, redact_text
from pycalico.errors import CalicoError
from pycalico.system.hostcheck import check_host, format_report
from pycalico.system.process import ProcessRunner

#: Commands whose output goes into the bundle: (file name, argv).
COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("uname.txt", ("uname", "-a")),
    ("nft-version.txt", ("nft", "--version")),
    ("bird-version.txt", ("bird", "--version")),
    ("nft-ruleset.txt", ("nft", "list", "ruleset")),
    ("ip-link.txt", ("ip", "-d", "link", "show")),
    ("ip-addr.txt", ("ip", "addr", "show")),
    ("ip-route.txt", ("ip", "route", "show", "table", "all")),
    ("ip6-route.txt", ("ip", "-6", "route", "show", "table", "all")),
    ("ip-rule.txt", ("ip", "rule", "show")),
    ("ip-neigh.txt", ("ip", "neigh", "show")),
    ("bridge-fdb.txt", ("bridge", "fdb", "show")),
    ("conntrack-stats.txt", ("conntrack", "-S")),
)
#: Sysctls pycalico reads or sets (relative to /proc/sys).
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/ipv4/conf/all/rp_filter",
    "net/netfilter/nf_conntrack_count",
    "net/netfilter/nf_conntrack_max",
)
#: Configuration files collected (redacted) when they exist.
CONFIG_FILES = ("/etc/calico/calico-node.env", "/etc/calico/calicoctl.cfg",
                "/etc/cni/net.d/10-calico.conflist")  # fmt: skip
LOG_TAIL_BYTES = 4 * 1024 * 1024


class DiagsError(CalicoError):
    """The bundle could not be written (destination missing or not writable)."""


@dataclass
class DiagsOptions:
    state_dir: str = "/var/run/calico"
    log_dir: str = "/var/log/calico"
    bird_socket: str | None = None
    config_files: tuple[str, ...] = CONFIG_FILES
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


class _Bundle:
    def __init__(self, progress: Callable[[str], None]) -> None:
        self.files: dict[str, bytes] = {}
        self.errors: list[str] = []
        self.progress = progress

    def add(self, name: str, data: str | bytes) -> None:
        self.files[name] = data.encode() if isinstance(data, str) else data

    def item(self, name: str, produce: Callable[[], str | bytes | None]) -> None:
        self.progress(f"Collecting {name}")
        try:
            data = produce()
        except (OSError, CalicoError, ValueError) as e:
            self.errors.append(f"{name}: {e}")
            return
        if data is not None:
            self.add(name, data)


def _redacted(path: Path) -> str:
    return redact_text(path.read_text(errors="replace"))


def _tail(path: Path, limit: int = LOG_TAIL_BYTES) -> bytes:
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - limit))
        return f.read()


def collect(
    runner: ProcessRunner,
    options: DiagsOptions,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, bytes]:
    """Every item as ``{archive-relative name: content}`` (``errors.txt`` included)."""
    b = _Bundle(progress)
    b.add("version.txt", f"pycalico {__version__}\n")
    b.item("checksystem.txt", lambda: format_report(check_host()) + "\n")
    b.item("env.txt", lambda: "".join(f"{k}={v}\n" for k, v in redact_env(options.env).items()))
    state = Path(options.state_dir)
    texts = [(f"config/{Path(p).name}", Path(p)) for p in options.config_files]
    texts += [(f"node/{n}", state / n) for n in ("status.json", "bird.cfg")]
    for name, path in texts:
        if path.is_file():
            b.item(name, functools.partial(_redacted, path))
    socket = options.bird_socket or str(state / "bird.ctl")
    if Path(socket).exists():
        b.item("bird/protocols.txt", lambda: BirdControl(socket).command("show protocols all").text)
    for name, argv in COMMANDS:

        def run(argv: tuple[str, ...] = argv) -> str:
            res = runner.run(argv, timeout=20)
            if res.returncode != 0:
                raise OSError(f"{' '.join(argv)}: exit {res.returncode}: {res.stderr.strip()}")
            return res.stdout

        b.item(f"host/{name}", run)

    def sysctls() -> str:
        out = []
        for key in SYSCTLS:
            try:
                out.append(
                    f"{key.replace('/', '.')} = {Path('/proc/sys', key).read_text().strip()}"
                )
            except OSError as e:
                out.append(f"{key.replace('/', '.')}: {e.strerror}")
        return "\n".join(out) + "\n"

    b.item("host/sysctl.txt", sysctls)
    logs = Path(options.log_dir)
    if logs.is_dir():
        for log in sorted(p for p in logs.rglob("*") if p.is_file()):
            b.item(f"logs/{log.relative_to(logs)}", functools.partial(_tail, log))
    else:
        b.errors.append(f"logs: {logs} is not a directory")
    b.add("errors.txt", "".join(f"{e}\n" for e in b.errors) or "none\n")
    b.add("manifest.json", json.dumps(sorted(b.files), indent=1) + "\n")
    return b.files


def write_bundle(files: Mapping[str, bytes], dest: str | None = None) -> Path:
    """Write ``files`` as ``calico-diags/<name>`` in a gzipped tar at ``dest`` (default
    ``/tmp/calico-diags-<UTC time>.tar.gz``), atomically, mode 0600."""
    path = Path(dest or f"/tmp/calico-diags-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.tar.gz")
    if not path.parent.is_dir():
        raise DiagsError(f"output: directory {path.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".calico-diags-", dir=path.parent)
    except OSError as e:
        raise DiagsError(f"output: cannot write in {path.parent}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            now = time.time()
            for name, data in sorted(files.items()):
                info = tarfile.TarInfo(f"calico-diags/{name}")
                info.size, info.mtime, info.mode = len(data), int(now), 0o600
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
