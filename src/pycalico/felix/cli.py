"""The standalone Felix command: ``python -m pycalico.felix.cli --node NAME [--mtu-file F]
[--no-routes]`` (datastore from ``DATASTORE_TYPE`` / ``CALICO_DATASTORE_PATH`` /
``ETCD_ENDPOINTS`` like every command).

Run it under ``ip netns exec NODE`` to program that namespace. Prints ``in-sync`` on stdout
once programmed; SIGHUP requests a full resync; SIGTERM/SIGINT stop it (the dataplane stays).
This is an edge: it turns typed configuration/datastore errors into exit codes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from pycalico.felix.agent import Felix


def main(argv: list[str] | None = None) -> int:
    from pycalico.config import ConfigError, load_config
    from pycalico.datastore import open_datastore
    from pycalico.errors import CalicoError
    from pycalico.felix.dataplane import SubprocessNftRunner

    p = argparse.ArgumentParser(prog="python -m pycalico.felix.cli")
    p.add_argument("--node", default=os.environ.get("NODENAME", ""), help="this node's name")
    p.add_argument("--refresh-interval", type=float, default=None,
                   help="nftablesRefreshInterval override (seconds)")  # fmt: skip
    p.add_argument("--route-refresh-interval", type=float, default=None,
                   help="routeRefreshInterval override (seconds)")  # fmt: skip
    p.add_argument("--mtu-file", default=None, help="MTU file for the CNI plugin")
    p.add_argument("--no-nat", action="store_true", help="do not manage ip calico-nat")
    p.add_argument("--no-routes", action="store_true", help="program nftables only")
    p.add_argument("--log-level", default=os.environ.get("FELIX_LOGSEVERITYSCREEN", "INFO"))
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.node:
        print("error: --node (or NODENAME) is required", file=sys.stderr)
        return 2
    try:
        ds = open_datastore(load_config())
    except (ConfigError, CalicoError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    overrides: dict[str, Any] = {}
    if args.refresh_interval is not None:
        overrides["nftablesRefreshInterval"] = args.refresh_interval
    felix = Felix(
        args.node, ds, SubprocessNftRunner(), overrides=overrides, env=os.environ,
        system_routes=not args.no_routes, mtu_file=args.mtu_file, nat_outgoing=not args.no_nat,
        route_refresh_interval=args.route_refresh_interval,
    )  # fmt: skip
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGHUP, lambda *_: felix.resync())
    felix.start()
    announced = False
    while not done.wait(0.2):
        if not announced and felix.wait_in_sync(0):
            print(f"felix {args.node}: in sync", file=sys.stderr, flush=True)
            print("in-sync", flush=True)
            announced = True
    felix.stop()
    ds.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
