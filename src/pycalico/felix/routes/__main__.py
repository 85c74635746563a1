"""``python -m pycalico.felix.routes``: run a RouteAgent in the current network namespace.

Prints ``in-sync`` on stdout once the first apply succeeded; exits 0 on SIGTERM/SIGINT (the
userspace tunnel goes, routes and devices stay), 2 on bad arguments or datastore errors.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pycalico.felix.routes")
    ap.add_argument("--node", required=True, help="this node's name (its Node resource)")
    ap.add_argument("--mtu-file", default=None, help="MTU file for the CNI plugin")
    ap.add_argument("--resync-interval", type=float, default=None, help="seconds (default 90)")
    ap.add_argument("--no-nat", action="store_true", help="do not manage ip calico-nat")
    ap.add_argument("--no-tunnel-addrs", action="store_true", help="do not allocate tunnel IPs")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from pycalico.datastore import open_datastore
    from pycalico.errors import CalicoError
    from pycalico.felix.routes.agent import RouteAgent

    try:
        ds = open_datastore()
    except CalicoError as e:
        print(f"routes: {e}", file=sys.stderr)
        return 2
    agent = RouteAgent(
        args.node,
        ds,
        mtu_file=args.mtu_file,
        nat_outgoing=not args.no_nat,
        manage_tunnel_addrs=not args.no_tunnel_addrs,
        resync_interval=args.resync_interval,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGHUP, lambda *_: agent.resync())
    agent.start()
    while not done.is_set():
        if agent.wait_in_sync(0.2):
            print("in-sync", flush=True)
            break
    done.wait()
    agent.stop()
    ds.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
