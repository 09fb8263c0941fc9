"""The ``fervid`` console script: Ctrl+C from the first moment is the CLI's one line, not a traceback.

Importing the CLI (typer, click, rich) takes about a tenth of a second, before ``fervid.cli.main``
can catch anything: a Ctrl+C in that time printed a ``KeyboardInterrupt`` traceback through the
import. This module imports nothing heavy and catches it around that import.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from fervid.cli import main as run_cli
    except KeyboardInterrupt:
        print("fervid: interrupted", file=sys.stderr)
        sys.exit(130)
    run_cli()
