"""pycalico.selector."""
