"""pycalico.api."""
