"""`python -m flowledger` and the `flowledger` console script: the `flowledger` command."""

from __future__ import annotations

import sys

# The exit code of an interrupted command, as the command's own handler returns it.
_EXIT_INTERRUPTED = 130


def main() -> int:
    """The exit code of the `flowledger` command run on sys.argv."""
    try:
        # Imported here: only running the command loads the tools, never importing the
        # package. Ctrl-C while they load (a few hundred milliseconds) or while the
        # arguments are parsed is one line too, not a traceback.
        from flowledger.tools.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        print("flowledger: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
