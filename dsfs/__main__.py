"""``python -m dsfs`` runs the command-line interface."""

from dsfs_cli.main import main

main()
