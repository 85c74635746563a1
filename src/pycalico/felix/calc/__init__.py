"""pycalico.felix.calc."""
