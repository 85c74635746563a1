"""pycalico.bgp."""
