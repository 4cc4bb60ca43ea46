"""The allocator tuning is applied once and can be switched off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = "from deepcrf.allocator import tune_allocator; print(tune_allocator(), tune_allocator())"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")
def test_tuning_applies_once_and_respects_opt_out():
    on = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert on.stdout.split() in (["True", "True"], ["False", "False"])  # False without glibc
    off = subprocess.run(
        [sys.executable, "-c", CODE],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "DEEPCRF_TUNE_MALLOC": "0"},
    )
    assert off.stdout.split() == ["False", "False"]
