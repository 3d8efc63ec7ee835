"""``python -m stanchion`` runs the command line."""

from stanchion.cli import main

main()
