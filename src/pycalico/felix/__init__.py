"""pycalico.felix."""
