"""The ``shoal`` program's entry point: Ctrl-C at any moment exits 130 with one line.

It imports nothing of shoal's own, so that an interrupt while Python is still
importing the CLI (about a tenth of a second) is caught too: the console script
imports this module, not ``shoal.cli.app``.
"""

from __future__ import annotations

import sys

INTERRUPTED = 130  # shoal.cli.exit_codes.INTERRUPTED, not imported here (a test checks they agree)


def main() -> None:
    try:
        from shoal.cli.app import main as run  # the import is what may be interrupted
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(INTERRUPTED)
    run()
