"""deepcrf.cli.help: plain-text help with defaults on every command, --version, errors that
name the command's flags."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from deepcrf.cli import build_parser, main
from deepcrf.cli.help import cli_flavoured, plain_text, version


def all_help_texts() -> dict[str, str]:
    """command path -> its --help text, for the top level and every (nested) sub-command."""
    texts = {"deepcrf": build_parser().format_help()}

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    texts[f"{path} {name}"] = sub.format_help()
                    walk(sub, f"{path} {name}")

    walk(build_parser(), "deepcrf")
    return texts


def test_help_is_plain_text_everywhere():
    texts = all_help_texts()
    assert {"deepcrf refine", "deepcrf data synth"} <= set(texts)
    for command, text in texts.items():
        assert "``" not in text and ":data:" not in text and "`" not in text, command


def test_options_with_a_default_say_it():
    texts = all_help_texts()
    for command, text in texts.items():
        parser_defaults = re.findall(r"\(default: ([^)]*)\)", text)
        assert "None" not in parser_defaults and "False" not in parser_defaults, command
    assert "(default: 0.5)" in texts["deepcrf refine"]  # --gt-prob
    assert "(default: cpu)" in texts["deepcrf refine"]  # --device
    assert "mean-field iterations (default: 10)" in texts["deepcrf refine"]  # --iterations
    assert "(default: 0)" in texts["deepcrf data synth"]  # --seed


def test_data_synth_has_a_description():
    text = all_help_texts()["deepcrf data synth"]
    assert "procedural" in text.split("options:")[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"deepcrf {version()}"
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'version = "{version()}"' in pyproject


def test_plain_text_and_cli_flavoured():
    assert (
        plain_text("``deepcrf refine`` and :data:`~a.B` and `x`") == "deepcrf refine and a.B and x"
    )
    flags = {"logits": "--logits", "gt_prob": "--gt-prob", "probs": "--probs"}
    assert (
        cli_flavoured("probs: must be >= 0 (pass logits=True for scores); gt_prob=0.7", flags)
        == "--probs: must be >= 0 (pass --logits for scores); --gt-prob 0.7"
    )
    assert cli_flavoured("--probs: bad; myprobs: x", flags) == "--probs: bad; myprobs: x"


def test_refine_errors_name_flags(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "a.npy", np.full((2, 8, 9), -1.0, np.float32))  # scores, not probs
    assert main(["refine", str(tmp_path / "a.png"), "--probs", str(tmp_path / "a.npy")]) == 1
    err = capsys.readouterr().err
    assert "--logits" in err and "logits=True" not in err
