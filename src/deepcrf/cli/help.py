"""What every ``deepcrf`` command shares: plain-text help that states defaults, the version,
and error messages phrased for the command line (``--logits``, not ``logits=True``).

``Parser`` is the argument parser class of the top-level command and of every sub-command
(``add_subparsers(parser_class=Parser)`` hands it down), so each command module gets these
behaviours without doing anything.
"""

from __future__ import annotations

import argparse
import functools
import re
import textwrap
from collections.abc import Callable, Iterator

__all__ = ["HelpFormatter", "Parser", "cli_flavoured", "plain_text", "translate_errors", "version"]

_LITERAL = re.compile(r"``(.+?)``")
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_TICKS = re.compile(r"`([^`\n]+)`")


def plain_text(text: str) -> str:
    """``text`` without reStructuredText markup: ``literal``, :role:`target`, `x`."""
    return _TICKS.sub(r"\1", _ROLE.sub(r"\1", _LITERAL.sub(r"\1", text)))


def version() -> str:
    """deepcrf's version (``deepcrf.__version__``, the one pyproject.toml declares)."""
    from deepcrf import __version__

    return __version__


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks and lose RST markup; every option whose default is
    a value (not None/False) says ``(default: ...)`` unless its help already mentions it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or any(action.default is v for v in (None, False, argparse.SUPPRESS))
            or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
            or "default" in text
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"

    def _format_text(self, text: str) -> str:
        """Paragraphs of prose are re-wrapped to the terminal; indented blocks and lists
        (a line starting with a space, ``*`` or ``-``) keep their lines."""
        text = plain_text(text % {"prog": self._prog} if "%(prog)" in text else text)
        width = max(self._width - self._current_indent, 11)
        paragraphs = []
        for block in text.strip("\n").split("\n\n"):
            lines = block.splitlines()
            if any(line[:1] in (" ", "*", "-", "\t") for line in lines):
                paragraphs.append(block)
            else:
                paragraphs.append(textwrap.fill(" ".join(lines), width))
        indent = " " * self._current_indent
        return textwrap.indent("\n\n".join(paragraphs), indent) + "\n\n"

    def _expand_help(self, action: argparse.Action) -> str:
        return plain_text(super()._expand_help(action))


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that always formats help with ``HelpFormatter``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)


def _flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> the option's long flag (``bilateral_compat`` -> ``--bilateral-compat``)."""
    names = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs and action.dest not in ("help", "version"):
            names[action.dest] = longs[0]
    return names


def cli_flavoured(message: str, flags: dict[str, str]) -> str:
    """``message`` with the Python API's names for the command's options replaced by the
    flags: ``logits=True`` -> ``--logits``, ``gt_prob: ...`` -> ``--gt-prob: ...``."""
    for dest, flag in sorted(flags.items(), key=lambda item: -len(item[0])):
        message = re.sub(rf"(?<![\w-]){dest}=True\b", flag, message)
        message = re.sub(rf"(?<![\w-]){dest}=(?=[\w\"'(\[-])", f"{flag} ", message)
        message = re.sub(rf"(?<![\w-]){dest}(?=:)", flag, message)
    return message


def translate_errors(func: Callable, flags: dict[str, str]) -> Callable:
    """``func`` whose ValueError/TypeError messages are rephrased by ``cli_flavoured``."""

    @functools.wraps(func)
    def run(args: argparse.Namespace):
        try:
            return func(args)
        except (ValueError, TypeError) as exc:
            text = str(exc)
            new = cli_flavoured(text, flags)
            if new == text:
                raise
            try:
                replacement = type(exc)(new)
            except Exception:  # an exception class with another signature: keep it
                raise exc from None
            raise replacement from exc

    return run


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield sub
                yield from _subparsers(sub)


def install_error_translation(parser: argparse.ArgumentParser) -> None:
    """Wrap the ``func`` of every (sub-)command so that its errors name its flags."""
    for sub in _subparsers(parser):
        func = sub.get_default("func")
        if func is not None and not hasattr(func, "__wrapped__"):
            sub.set_defaults(func=translate_errors(func, _flag_names(sub)))
