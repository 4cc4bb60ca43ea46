"""two_stage_param_groups' documented example works on the DeepLab models it names."""

from __future__ import annotations

import re

import pytest

from deepcrf.models import build
from deepcrf.nn import DenseCRF, two_stage_param_groups


@pytest.mark.parametrize("name", ["deeplab_largefov", "deeplab_msc_largefov"])
def test_documented_top_prefix_works_on_deeplab(name):
    example = re.search(r"top=(\(.*?\))", two_stage_param_groups.__doc__)
    top = eval(example[1])  # the docstring's own example, e.g. ("fc8.",)
    model = build(name, 3)
    groups = {g["name"]: g for g in two_stage_param_groups(model, DenseCRF(3), 1, top=top)}
    top_params = {id(p) for p in groups["unary_top"]["params"]}
    assert top_params == {id(p) for n, p in model.named_parameters() if n.startswith(top)}
    assert top_params and groups["unary"]["params"]
