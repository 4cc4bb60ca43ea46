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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command (plain-text help with
    defaults, ``--version``, errors that name the command's flags: ``deepcrf.cli.help``).

    ``only`` (a name in ``COMMANDS``) registers that command alone: running one command
    then imports only its own module (the others' imports cost ~0.2 s of start-up)."""
    from deepcrf.cli.help import Parser, install_error_translation, version

    parser = Parser(prog="deepcrf", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"deepcrf {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS if only is None else [only]:
        importlib.import_module(f"deepcrf.cli.{name.replace('-', '_')}").register(sub)
    install_error_translation(parser)
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
    flags are argparse's usage errors (exit 2). Run as the program (``argv`` None: the
    ``deepcrf`` script, ``python -m deepcrf``), a command that allows it (its parser's
    ``fast_exit`` default: folder commands whose outputs are complete files) ends the
    process at once when it finishes (``exit_now``) instead of returning."""
    args: list[argparse.Namespace] = []
    code = _run(argv, args)
    fast = bool(args) and getattr(args[0], "fast_exit", False)
    if argv is None and fast and os.environ.get("DEEPCRF_FAST_EXIT", "1") != "0":
        exit_now(code)
    return code


def exit_now(code: int) -> None:
    """End the process with ``code`` without the interpreter's teardown.

    With torch imported, Python's own exit spends 0.4-1 s (measured on 2 busy cores) in
    garbage collections over torch's objects, module teardown and library destructors,
    work that frees memory the operating system reclaims anyway: a third of a
    pseudo-label command's fixed cost besides ``import torch``. This does what Python's
    exit does for the program's state, as ``multiprocessing``'s forked children end: wait
    for non-daemon threads, run the ``atexit`` handlers, flush the standard streams; then
    ``os._exit``. Outputs are already complete (written atomically and closed).
    ``DEEPCRF_FAST_EXIT=0`` keeps the normal exit."""
    import atexit
    import threading

    threading._shutdown()  # what the interpreter does first at exit (joins threads)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone (a pipe whose reader left)
            pass
    os._exit(code)


def _run(argv: list[str] | None, parsed: list[argparse.Namespace]) -> int:
    """``main`` without its exit: parse ``argv`` (default ``sys.argv[1:]``; the arguments
    go to ``parsed``), run, return the status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # a known command first: register it alone (help and errors of other forms need all)
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    parsed.append(args)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader went away (e.g. `deepcrf refine | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except EXPECTED_ERRORS as exc:
        if os.environ.get("DEEPCRF_DEBUG"):
            raise
        print(f"deepcrf {args.command}: error: {describe(exc)}", file=sys.stderr)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
