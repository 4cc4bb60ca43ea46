"""``deepcrf.data`` imports its submodules lazily (PEP 562): every public name still resolves
to its submodule's object, and importing the package loads no dataset module."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import deepcrf.data as data


def test_every_public_name_resolves_to_its_submodule_object():
    assert set(data.__all__) == set(data._SOURCES)
    for name in data.__all__:
        module = importlib.import_module(f"deepcrf.data.{data._SOURCES[name]}")
        assert getattr(data, name) is getattr(module, name), name
    assert set(data.__all__) <= set(dir(data))


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_reader"):
        data.no_such_reader  # noqa: B018


def test_importing_the_package_loads_no_dataset_module():
    code = (
        "import sys, deepcrf.data; "
        "print(sorted(m for m in sys.modules if m.startswith('deepcrf.data.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
