"""pycalico.felix.tunnels: tunnel data paths that the kernel cannot provide here.

:mod:`pycalico.felix.tunnels.uipip`: :class:`UserspaceIpip` (TUN ``tunl0`` + raw protocol-4
socket, RFC 2003 IP-in-IP), :class:`Lpm`, and the pure packet helpers. The VXLAN device, its
FDB and neighbour entries are plain kernel objects managed by
:mod:`pycalico.felix.routes.kernel`.
"""
