"""pycalico: a Python implementation of the Calico architecture for container networking.

Every workload gets its own IP, every node is a virtual router; the datastore is the single
source of truth and every agent reconciles the kernel to it.
"""

__version__ = "0.1.0"
