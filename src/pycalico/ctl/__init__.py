"""pycalico.ctl."""
