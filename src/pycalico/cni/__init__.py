"""pycalico.cni."""
