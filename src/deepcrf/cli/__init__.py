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

COMMANDS: list[str] = [
    "refine",
    "eval",
    "data",
    "convert",
    "crf-search",
    "pseudo-label",
    "train",
    "predict",
]


DESCRIPTION = """\
Semantic segmentation with CNNs and fully connected CRFs.

Start with `deepcrf refine` (no arguments): it refines an embedded sample scene and shows
what the dense CRF changed. `deepcrf COMMAND --help` describes each command."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command (plain-text help with
    defaults, ``--version``, errors that name the command's flags: ``deepcrf.cli.help``)."""
    from deepcrf.cli.help import Parser, install_error_translation, version

    parser = Parser(prog="deepcrf", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"deepcrf {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"deepcrf.cli.{name.replace('-', '_')}").register(sub)
    install_error_translation(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"deepcrf {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        from deepcrf.cli.progress import close_bars

        close_bars()
        print(
            f"deepcrf {args.command}: interrupted; finished outputs are kept (run the same "
            "command again to resume)",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `deepcrf refine | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
