"""pycalico.node."""
