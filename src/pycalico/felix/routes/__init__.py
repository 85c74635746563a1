"""pycalico.felix.routes: Felix's cluster routes, VXLAN/IPIP tunnels, NAT-outgoing and MTU.

- :mod:`.model` — input values parsed from resources, output values (:class:`Route`, ...),
  constants (:data:`ROUTE_PROTO` = 80, device names).
- :mod:`.calc` — pure :func:`compute` (pools, nodes, blocks, config, host facts) ->
  :class:`DesiredState`.
- :mod:`.kernel` — :class:`KernelRoutes`: desired-vs-actual for routes (proto 80), the
  ``vxlan.calico`` device + FDB/neighbours, the userspace ``tunl0``, ``ip calico-nat``, sysctls
  and the MTU file. One instance per IP version (``vxlan-v6.calico``, ``ip6 calico-nat``;
  IPIP is IPv4 only).
- :mod:`.agent` — :class:`RouteAgent` (syncer + one owner thread; start/stop/wait_in_sync/resync,
  alive/stats).
- :mod:`.tunnel_addr` — :func:`ensure_tunnel_addresses` (IPAM + Node resource).
- :mod:`.mtu` — host MTU detection and the CNI MTU file.

Run standalone: ``python -m pycalico.felix.routes --node NAME`` (datastore from the usual
``DATASTORE_TYPE``/``CALICO_DATASTORE_PATH``/``ETCD_ENDPOINTS`` environment).
Heavy modules are not imported here; import the submodules.
"""
