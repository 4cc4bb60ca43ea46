"""Running one command registers (and imports) only that command's module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import deepcrf
from deepcrf.cli import COMMANDS, build_parser


def test_one_command_parser_has_only_that_command():
    parser = build_parser("pseudo-label")
    args = parser.parse_args(["pseudo-label", "--cams", "c", "--images", "i", "--out", "o"])
    assert args.command == "pseudo-label" and callable(args.func)
    full = build_parser()
    assert set(full._subparsers._group_actions[0].choices) == set(COMMANDS)
    assert set(parser._subparsers._group_actions[0].choices) == {"pseudo-label"}


def test_running_a_command_skips_the_other_commands_imports():
    code = (
        "import sys\n"
        "from deepcrf.cli import main\n"
        "try:\n"
        "    main(['pseudo-label', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('deepcrf.cli.')))\n"
    )
    source = str(Path(deepcrf.__file__).parents[1])  # this checkout's src, not an install
    env = {**os.environ, "PYTHONPATH": source + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    loaded = out.strip().splitlines()[-1]
    assert "deepcrf.cli.pseudo_label" in loaded
    for other in ("deepcrf.cli.train", "deepcrf.cli.predict", "deepcrf.cli.crf_search"):
        assert other not in loaded


def test_unknown_command_still_lists_every_command(capsys):
    from deepcrf.cli import main

    try:
        main(["pseudo-lable"])
    except SystemExit as exc:
        assert exc.code == 2
    err = capsys.readouterr().err
    assert "pseudo-label" in err and "crf-search" in err
