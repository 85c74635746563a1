"""pycalico.felix.dataplane."""
