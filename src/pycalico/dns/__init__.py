"""pycalico.dns."""
