"""pycalico.lab."""
