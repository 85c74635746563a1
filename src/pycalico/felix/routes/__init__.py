"""pycalico.felix.routes: what is left of the former route agent while issue 12 moves it.

- :mod:`.model` — input values parsed from resources (:class:`PoolInfo`, :class:`NodeInfo`,
  :class:`BlockInfo`, :class:`LocalEndpoint`, :class:`RouteConfig`); moving to
  :mod:`pycalico.model`.
- :mod:`.kernel` — :class:`KernelRoutes`, the route driver Felix's owner loop applies
  desired states with (routes proto 80, ``vxlan.calico`` + FDB/neighbours, userspace
  ``tunl0``, ``ip calico-nat``, sysctls, the MTU file); moving to :mod:`pycalico.felix.dataplane`.
- :mod:`.mtu` — host MTU detection and the CNI MTU file.

The calculation is :mod:`pycalico.felix.calc.routes` (values in
:mod:`pycalico.felix.calc.routetypes`); the loop is :class:`pycalico.felix.agent.Felix`;
tunnel addresses are :mod:`pycalico.node.tunnels`. Heavy modules are not imported here.
"""
