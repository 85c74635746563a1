"""pycalico.ipam."""
