"""pycalico.felix.rules."""
