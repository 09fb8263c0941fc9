"""``python -m fervid`` runs the CLI."""

from fervid.entry import main

main()
