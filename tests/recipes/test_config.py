"""Config dataclasses <-> YAML, --set overrides, and the errors for bad keys and values."""

from __future__ import annotations

import pytest

from deepcrf.params import PRESETS
from deepcrf.recipes import RECIPES, Config, ConfigError, apply_overrides, resolve_config
from deepcrf.recipes.config import load_yaml, parse_override, save_yaml


def test_yaml_round_trip(tmp_path):
    changes = ["optim.lr=0.01", "model.options.width=0.25", "data.holdout=12",
               "train.select_every=5"]  # fmt: skip
    config = resolve_config("crfasrnn", "tiny", changes)
    path = save_yaml(config, tmp_path / "config.yaml")
    again = Config.from_dict(load_yaml(path))
    assert again == config
    assert (again.data.holdout, again.train.select_every) == (12, 5)
    assert again.to_dict() == config.to_dict()


def test_overrides_are_parsed_as_yaml():
    config = resolve_config("deeplab", "tiny")
    preset_lr = config.optim.lr
    assert preset_lr != pytest.approx(1e-3)
    changed = apply_overrides(
        config,
        [
            "optim.lr=1e-3",  # YAML 1.1 reads this as a string: still a float here
            "data.label_stride=4",
            "optim.head=[fc8, fc7]",
            "init=null",
            "model.options.dropout=0.25",
            "train.progress=false",
            "crf.bilateral_sxy=[50, 60]",
        ],
    )
    assert changed.optim.lr == pytest.approx(1e-3)
    assert changed.data.label_stride == 4
    assert changed.optim.head == ["fc8", "fc7"]
    assert changed.init is None
    assert changed.model.options == {**config.model.options, "dropout": 0.25}
    assert config.model.options["dropout"] == 0.0  # the override made a copy
    assert changed.train.progress is False
    assert changed.crf_params().bilateral_sxy == (50.0, 60.0)
    assert config.optim.lr == preset_lr  # the original is untouched


def test_presets_carry_the_papers_crf_values():
    assert resolve_config("deeplab", "paper").crf_params() == PRESETS["deeplab_largefov"]
    assert resolve_config("fcn8s", "tiny").crf_params() == PRESETS["crfasrnn"]
    for name, recipe in RECIPES.items():
        assert set(recipe.presets) == {"paper", "tiny"}, name
        resolve_config(name, "paper")
        resolve_config(name, "tiny")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown key optim.lrr; valid keys: optim.name, optim.lr"),
        ("nosection.x=1", "unknown key nosection"),
        ("optim.lr=fast", "optim.lr: expected float"),
        ("train.steps=1.5", "train.steps: expected int"),
        ("data.flip=3", "data.flip: expected bool"),
        ("optim.name=rmsprop", "optim.name: expected sgd or adam"),
        ("crf.bilateral_sxy=-1", "bilateral_sxy"),
        ("crf.sigma=3", "unknown parameter(s) sigma"),
        ("optim.lr", "expected key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(resolve_config("deeplab", "tiny"), [override])
    assert message in str(info.value)


def test_unknown_recipe_and_preset_list_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="choose one of deeplab, fcn8s, crfasrnn, joint"):
        resolve_config("deeplabv3", "tiny")
    with pytest.raises(ConfigError, match="no preset 'huge'; choose one of paper, tiny"):
        resolve_config("deeplab", "huge")
    yaml_file = save_yaml(resolve_config("deeplab", "tiny"), tmp_path / "c.yaml")
    assert resolve_config(str(yaml_file)).recipe == "deeplab"
    with pytest.raises(ConfigError, match="--preset"):
        resolve_config(str(yaml_file), "tiny")
    (tmp_path / "bad.yaml").write_text("model: {name: fcn8s, depth: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown key.*model.depth"):
        resolve_config(str(tmp_path / "bad.yaml"))


def test_parse_override_splits_dotted_keys():
    assert parse_override("a.b.c=[1, 2]") == (["a", "b", "c"], [1, 2])
    assert parse_override("x=") == (["x"], "")
