"""Command-line entry point: ``deepcrf <command> ...``.

Each sub-command lives in its own module ``deepcrf.cli.<name>`` exposing
``register(subparsers)``, which adds its parser and sets ``func`` to the
function that runs it. Add a module name to ``COMMANDS`` to add a command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS: list[str] = ["refine", "eval", "data"]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(prog="deepcrf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"deepcrf.cli.{name}").register(sub)
    return parser


#: Failures a user can cause and fix (bad arguments, files, devices, memory): reported as
#: one ``deepcrf <command>: error: ...`` line. Anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (ValueError, TypeError, OSError, ImportError, MemoryError, NotImplementedError)


def describe(exc: BaseException) -> str:
    """One line for an expected failure, naming the file for OS errors."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
        return f"{target}: {exc.strerror}"
    if isinstance(exc, MemoryError):
        return (
            f"out of memory ({exc or 'allocation failed'}); lower DEEPCRF_MEMORY_BUDGET or "
            "use --tile to refine in smaller pieces"
        )
    text = str(exc) or type(exc).__name__
    return " ".join(text.split()) if "\n" in text else text


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit status.

    Expected failures (``EXPECTED_ERRORS``) print one ``deepcrf <command>: error: ...`` line
    and return 1 (``DEEPCRF_DEBUG=1`` shows their traceback); Ctrl-C returns 130; bad
    flags are argparse's usage errors (exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EXPECTED_ERRORS as exc:
        if os.environ.get("DEEPCRF_DEBUG"):
            raise
        print(f"deepcrf {args.command}: error: {describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"deepcrf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
