"""``python -m fervid`` runs the CLI."""

from fervid.cli import main

main()
