"""``python -m taskbridge`` runs the command line."""

from .cli import main

main()
