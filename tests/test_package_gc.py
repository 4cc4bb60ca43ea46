"""Importing deepcrf pauses the garbage collector for torch's import and restores it; the
``deepcrf`` command (console script or ``python -m deepcrf``) also freezes what the import
made (``gc.freeze``), a library import never does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import deepcrf

SOURCE = str(Path(deepcrf.__file__).resolve().parents[1])  # this checkout, not an install


def _after_import(setup: str) -> tuple[bool, int]:
    """(collector enabled, objects frozen) in a fresh process after ``setup`` and
    ``import deepcrf``."""
    code = f"{setup}\nimport gc, deepcrf\nprint(gc.isenabled(), gc.get_freeze_count())"
    env = {**os.environ, "PYTHONPATH": SOURCE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[-2] == "True", int(out[-1])


def test_a_library_import_restores_the_collector_and_freezes_nothing():
    assert _after_import("pass") == (True, 0)
    assert _after_import("import gc; gc.disable()") == (False, 0)  # left as found


@pytest.mark.parametrize(
    "setup",
    [
        # python -m deepcrf: while the package is imported for -m, argv[0] is "-m"
        "import sys; sys.argv = ['-m', 'refine']; "
        "sys.orig_argv = [sys.executable, '-m', 'deepcrf', 'refine']",
        # the console script: __main__ is the installed ``deepcrf`` script
        "import sys; sys.modules['__main__'].__file__ = '/usr/local/bin/deepcrf'",
    ],
    ids=["python -m deepcrf", "console script"],
)
def test_the_command_freezes_what_the_import_made(setup):
    enabled, frozen = _after_import(setup)
    assert enabled and frozen > 10_000  # torch's objects, never walked again


def test_other_programs_are_not_the_command():
    """A script of another name, or ``-m`` of another module, is a library user."""
    assert _after_import("import sys; sys.modules['__main__'].__file__ = '/x/deepcrf.py'")[1] == 0
    other_module = "import sys; sys.argv = ['-m']; sys.orig_argv = [sys.executable, '-m', 'mytool']"
    assert _after_import(other_module)[1] == 0
