"""Long-lived TCP flows for e2e tests: a line-echo server on :9000 and a client that keeps one
connection busy for N seconds, exiting 1 on any error or a reply gap over 10 s; and the lab
pod lookups the flow tests share."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from typing import Any


def pod_record(lab: Any, key: str) -> dict[str, object]:
    """The lab's record of pod ``namespace/name`` (``lab``: the e2e conftest's Lab)."""
    for p in lab.state()["pods"]:
        if f"{p['namespace']}/{p['name']}" == key:
            return dict(p)
    raise KeyError(key)


def pod_ip(lab: Any, key: str) -> str:
    """The first address of pod ``namespace/name``, without its prefix length."""
    return str(pod_record(lab, key)["ips"][0]).split("/")[0]  # type: ignore[index]


SERVER = textwrap.dedent(
    """\
    import socket, threading
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 9000)); s.listen(8)
    def serve(c):
        f = c.makefile("rwb")
        for line in f:
            f.write(line); f.flush()
    while True:
        c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
    """
)
CLIENT = textwrap.dedent(
    """\
    import socket, sys, time
    ip, seconds = sys.argv[1], float(sys.argv[2])
    c = socket.create_connection((ip, 9000), timeout=5); c.settimeout(10)
    f = c.makefile("rwb"); n = 0; end = time.monotonic() + seconds
    print("connected", flush=True)
    while time.monotonic() < end:
        f.write(b"ping %d\\n" % n); f.flush()
        if f.readline() != b"ping %d\\n" % n:
            print("bad reply", n, flush=True); sys.exit(1)
        n += 1; time.sleep(0.1)
    print("ok", n, flush=True)
    """
)


class PodFlow:
    """One TCP flow between lab pods: :data:`SERVER` in pod ``dst`` and ``client`` (Python
    source run with ``args`` in pod ``src``), which prints ``connected`` once its connection
    is up; the client is retried ``tries`` times while the server starts listening.
    ``stdin``: give the client a pipe (it stops when stdin closes)."""

    def __init__(
        self,
        lab: Any,
        src: str,
        dst: str,
        client: str,
        args: list[str],
        *,
        tries: int,
        stdin: bool = False,
    ) -> None:
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", str(pod_record(lab, dst)["netns"]), sys.executable, "-c",
             SERVER],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.client: subprocess.Popen[str] | None = None
        argv = ["ip", "netns", "exec", str(pod_record(lab, src)["netns"]), sys.executable, "-c"]
        for _ in range(tries):
            self.client = subprocess.Popen(
                [*argv, client, *args],
                stdin=subprocess.PIPE if stdin else None,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert self.client.stdout is not None
            if self.client.stdout.readline().strip() == "connected":
                return
            self.client.kill()
            self.client.wait(5)
            time.sleep(0.2)
        self.close()
        raise AssertionError("flow did not connect")

    def close(self) -> None:
        for p in (self.client, self.server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(5)
