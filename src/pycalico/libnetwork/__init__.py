"""Docker libnetwork remote drivers: the ``calico`` network driver and the ``calico-ipam``
IPAM driver (JSON over HTTP on unix sockets in Docker's plugin directory).

``driver`` owns the protocol semantics (Calico's libnetwork-plugin behaviour over pycalico's
IPAM, datastore and CNI workload wiring); ``server`` owns the sockets; ``dockerapi`` asks the
local dockerd for a container's name and labels. calico-node serves them as a component
(:mod:`pycalico.node.libnetwork`).
"""
