"""pycalico.system."""
