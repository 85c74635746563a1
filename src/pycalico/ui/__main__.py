"""``python -m pycalico.ui``: the console command (what ``calicoctl ui`` runs)."""

from pycalico.ui.cli import main

main()
