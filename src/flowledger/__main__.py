"""`python -m flowledger`: the `flowledger` command."""

from __future__ import annotations


def main() -> int:
    """The exit code of the `flowledger` command run on sys.argv."""
    # Imported here: only running the command loads the tools, never importing the package.
    from flowledger.tools.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
