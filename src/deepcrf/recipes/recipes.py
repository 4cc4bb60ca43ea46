"""The papers' systems as named configs, each with a ``paper`` and a ``tiny`` preset.

``paper``: the hyper-parameters of ``RECIPES.md`` (VOC 2012, ImageNet VGG-16 through
``backbone_weights``, a GPU). ``tiny``: small width, small crops, a few hundred steps with
Adam, for a CPU in minutes (models that clearly beat chance, with the papers' orderings).
A preset is a nested dict of changes to the defaults of ``deepcrf.recipes.config``.

``deepcrf train crfasrnn`` / ``joint`` without ``init=`` first train their first stage
(``fcn8s`` / ``deeplab`` with the same preset plus the ``stage1`` overrides) into
``RUN/fcn8s`` / ``RUN/deeplab`` and start from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..params import PRESETS
from .config import Config, ConfigError, load_yaml, merge_dict

__all__ = ["RECIPES", "Recipe", "first_stage_config", "list_recipes", "resolve_config"]

_DEEPLAB_CRF = PRESETS["deeplab_largefov"].to_dict()
_CRFASRNN_CRF = PRESETS["crfasrnn"].to_dict()

# ---------------------------------------------------------------- shared tiny settings
_TINY_DATA = {
    "crop_size": 80,
    "scale_min": 0.75,
    "scale_max": 1.25,
    "flip": True,
    "val_images": None,
    # 15% of the training images (at least one) are never trained on: the run chooses its
    # CRF on them, and a second stage keeps its best checkpoint by their mIoU (recipes.holdout)
    "holdout": 0.15,
}
_TINY_TRAIN = {
    "batch_size": 8,
    "eval_every": 0,
    "save_every": 20,
    "log_every": 10,
}
# Lin et al.: FeatMap-Net on three scales with the 5x5 / 9x9 sliding pyramid, range box 0.4
# of the short side sampled on a 5x5 grid, 3 mean-field iterations; one FeatMap-Net per
# potential. Ablations: featmap_options.pyramid_windows=[], featmap_options.scales=[1.2],
# model.relations=[] (unary only), unary_nets=N, shared_featmap=true.
_CONTEXTUAL_MODEL = {
    "featmap_options": {"scales": [1.2, 0.8, 0.4], "pyramid_windows": [5, 9]},
    "box": 0.4,
    "grid": 5,
    "iterations": 3,
    "unary_nets": 1,
    "shared_featmap": False,
}
_CONTEXTUAL_NEW_LAYERS = ["featmaps.*.block6", "unary_nets", "pairwise_nets"]
# the tiny DeepLab (and joint's CNN): LargeFOV's dilation 12 spans 3/10 of a 321-px crop's
# 40x40 score map; 3 keeps that field of view on the 10x10 maps of 80-px crops. A thin VGG-16
# trained from scratch loses most of its ReLUs without normalisation; GroupNorm (not
# BatchNorm) keeps a DDP job's gradients those of one process with the whole batch
_TINY_DEEPLAB = {"width": 0.125, "dropout": 0.0, "fc6_dilation": 3, "norm": "group"}
_TINY_ADAM = {"name": "adam", "weight_decay": 0.0, "bias_lr_mult": 1.0, "head_lr_mult": 1.0}
# published CRF values were chosen for 500-pixel VOC photos and full VGG-16 networks; a tiny
# run chooses its own on its held-out training images at the end (data.holdout;
# recipes.crf_choice's grid for small images and weak networks), which a second stage
# (CRF-as-RNN, joint) starts from
_TINY_CRF_SEARCH = {"images": 20, "iterations": 10, "grid": {}}
# DeepLab's own cross-validation searched w1 in [5, 10] (RECIPES.md); the shared small-image
# grid stops at w1 = 6, and on the tiny DeepLab's val images w1 = 10 beat 6 on all four
# benchmark generators (+0.2 to +0.6 mIoU, larger gains in the narrow trimap bands), so its
# grid spans 2 (a weak net), 5 and 10; w2, σα and σβ as in ``crf_choice.SMALL_IMAGE_GRID``
_TINY_DEEPLAB_CRF_SEARCH = {
    **_TINY_CRF_SEARCH,
    "grid": {
        "gaussian_compat": [0.0, 1.0, 3.0],
        "bilateral_compat": [2.0, 5.0, 10.0],
        "bilateral_sxy": [10.0, 40.0],
        "bilateral_srgb": [4.0, 12.0],
    },
}
# the tiny FCN-8s (and the FCN-8s inside the tiny CRF-as-RNN, which starts from it): width
# 1/16 from scratch, so GroupNorm after every convolution (without it the thin VGG-16 loses
# its ReLUs and stays near the class prior on the shapes scenes: 30.7 against 48.4 val mIoU);
# GroupNorm rather than BatchNorm: it does not depend on the batch (torchrun gives the
# gradients of one process) and evaluates as it trains
_TINY_FCN = {"width": 0.0625, "dropout": 0.0, "norm": "group"}


@dataclass
class Recipe:
    """A named system: one line of description and its presets."""

    description: str
    presets: dict[str, dict[str, Any]]
    first_stage: str | None = None
    preset_notes: dict[str, str] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "deeplab": Recipe(
        "DeepLab v1 (Chen et al. 2015): atrous VGG-16, loss at stride 8, dense CRF after it",
        {
            "paper": {
                "model": {"name": "deeplab_largefov", "options": {}},
                "data": {
                    "dataset": "voc",
                    "train_split": "trainaug",
                    "crop_size": 321,
                    "label_stride": 8,
                    "flip": True,
                },
                "optim": {
                    "name": "sgd",
                    "lr": 1e-3,
                    "momentum": 0.9,
                    "weight_decay": 5e-4,
                    "head": ["fc8"],
                    "head_lr_mult": 10.0,
                },
                "schedule": {"name": "step", "step_size": 2000, "gamma": 0.1},
                "train": {"steps": 6000, "batch_size": 20, "eval_every": 1000, "save_every": 500},
                "crf": _DEEPLAB_CRF,
            },
            "tiny": {
                "model": {
                    "name": "deeplab_largefov",
                    "init": "kaiming",
                    "options": {**_TINY_DEEPLAB},
                },
                "data": {**_TINY_DATA, "label_stride": 8},
                # 2e-3 with GroupNorm (without norm 2e-3 left the 15-layer net near the class
                # prior and 5e-4 was the best rate; with it, 5e-4 learns too slowly in 600 steps:
                # texture scenes 16.0 against 19.1 val mIoU)
                "optim": {**_TINY_ADAM, "lr": 2e-3, "head": ["fc8"]},
                "schedule": {"name": "poly", "warmup_steps": 20},
                # 1200 steps (channels-last input made a step ~1.4x cheaper): at 600 the
                # shapes scenes' DeepLab was 36.6 val mIoU (star IoU 0) and the CRF lowered it;
                # at 1200 52.6, +7.1 with the CRF
                "train": {**_TINY_TRAIN, "steps": 1200},
                "crf": _DEEPLAB_CRF,
                "crf_search": _TINY_DEEPLAB_CRF_SEARCH,
            },
        },
        preset_notes={
            "paper": "VOC trainaug, 321 crops, batch 20, SGD 1e-3 (fc8 x10), 6k steps",
            "tiny": "width 1/8, GroupNorm, fc6 dilation 3, 80 px crops, batch 8, Adam 2e-3, 1200 "
            "steps, CRF chosen on the 15% held-out training images (w1 up to 10)",
        },
    ),
    "fcn8s": Recipe(
        "FCN-8s (Long et al. 2015), the CNN of CRF-as-RNN; run carries CRF-as-RNN's CRF values",
        {
            "paper": {
                "model": {"name": "fcn8s", "options": {}},
                "data": {
                    "dataset": "voc",
                    "train_split": "trainaug",
                    "crop_size": 500,
                    "flip": True,
                },
                # FCN's at-once net: lr 1e-10 on a summed loss, momentum 0.99, batch 1; with
                # the per-pixel mean (~2.5e5 pixels) that is about 2.5e-5
                "optim": {
                    "name": "sgd",
                    "lr": 2.5e-5,
                    "momentum": 0.99,
                    "weight_decay": 5e-4,
                    "head": ["score_"],
                    "head_lr_mult": 1.0,
                    "freeze": ["upscore8"],
                },
                "schedule": {"name": "constant"},
                "train": {"steps": 100000, "batch_size": 1, "eval_every": 4000, "save_every": 2000},
                "crf": _CRFASRNN_CRF,
            },
            "tiny": {
                "model": {"name": "fcn8s", "init": "kaiming", "options": _TINY_FCN},
                "data": {**_TINY_DATA},
                "optim": {**_TINY_ADAM, "lr": 3e-3, "head": ["score_"], "freeze": ["upscore8"]},
                "schedule": {"name": "poly", "warmup_steps": 20},
                # 600 steps (channels-last input made a step ~1.5x cheaper): at 300 the shapes
                # scenes' FCN-8s was 38.0 val mIoU, at 600 63.1
                "train": {**_TINY_TRAIN, "steps": 600},
                "crf": _CRFASRNN_CRF,
                "crf_search": _TINY_CRF_SEARCH,
            },
        },
        preset_notes={
            "paper": "VOC trainaug, batch 1, SGD 2.5e-5 momentum 0.99 (mean loss), 100k steps",
            "tiny": "width 1/16 with GroupNorm, no dropout, 80 px crops, batch 8, Adam 3e-3, 600 "
            "steps, CRF chosen on the 15% held-out training images",
        },
    ),
    "crfasrnn": Recipe(
        "CRF-as-RNN (Zheng et al. 2015): FCN-8s + trainable dense CRF end to end from FCN-8s",
        {
            "paper": {
                "model": {"name": "crfasrnn", "options": {}},
                "data": {
                    "dataset": "voc",
                    "train_split": "trainaug",
                    "crop_size": 500,
                    "scale_min": 1.0,
                    "scale_max": 1.0,
                },
                # Caffe lr 1e-13 on a summed loss = ~2.5e-8 on the mean; CRF x1e4 / x1e3
                "optim": {
                    "name": "sgd",
                    "lr": 2.5e-8,
                    "momentum": 0.99,
                    "weight_decay": 5e-4,
                    "crf_lr_mult": 1e4,
                    "compat_lr_mult": 1e3,
                    "freeze": ["fcn.upscore8"],
                },
                "schedule": {"name": "constant"},
                "train": {"steps": 60000, "batch_size": 1, "eval_every": 4000, "save_every": 2000},
                "crf": _CRFASRNN_CRF,
            },
            "tiny": {
                # the CNN learns through the CRF the FCN-8s run chose on its held-out images,
                # with the test-time iterations; the CRF at 10x the CNN's rate. Adam's first
                # steps move every weight by about the rate: at 1e-4 they knocked the 600-step
                # FCN-8s down on the held-out images (project's scenes seed 0: 67.0 at step 0,
                # 60.9 at step 20, 66.6 at 80: selection kept step 0, a tie on val); at 3e-5 the
                # held-out score rises from step 20 (70.3) and val beats FCN-8s + CRF on the
                # project's scenes (72.20 -> 73.08) and the shapes scenes (63.68 -> 66.17);
                # 5e-5 with a 40-step warm-up: 72.15 / 66.75. The best of steps 0, 20, ..., 120
                # by held-out mIoU is kept (recipes.holdout)
                "model": {
                    "name": "crfasrnn",
                    "options": {**_TINY_FCN, "crf": {"iterations": _TINY_CRF_SEARCH["iterations"]}},
                },
                "data": {**_TINY_DATA},
                "optim": {
                    **_TINY_ADAM,
                    "lr": 3e-5,
                    "crf_lr_mult": 10.0,
                    "compat_lr_mult": 10.0,
                    "freeze": ["fcn.upscore8"],
                },
                "schedule": {"name": "constant"},
                "train": {
                    **_TINY_TRAIN,
                    "steps": 120,
                    "batch_size": 4,
                    "save_every": 20,
                    "select_every": 20,
                },
                "crf": _CRFASRNN_CRF,
            },
        },
        first_stage="fcn8s",
        preset_notes={
            "paper": "from an FCN-8s run (init=), batch 1, T=5/10, CRF lr x1e4/x1e3",
            "tiny": "from the tiny FCN-8s and its chosen CRF: CNN and CRF end to end (T=10 as "
            "at test), Adam 3e-5 (CRF 3e-4), 120 steps of batch 4, best of steps 0-120 on "
            "held-out images",
        },
    ),
    "joint": Recipe(
        "Joint CNN + CRF (Schwing & Urtasun 2015): stage 1 = deeplab, stage 2 learns CNN, "
        "kernel weights and bandwidths through the CRF at full resolution",
        {
            "paper": {
                "model": {"name": "joint_deeplab_crf", "options": {}},
                "data": {"dataset": "voc", "train_split": "trainaug", "crop_size": 306},
                # stage-2 rates are not in the paper: CNN at 1e-4, CRF at 1e-3
                "optim": {
                    "name": "sgd",
                    "lr": 1e-4,
                    "momentum": 0.9,
                    "weight_decay": 5e-4,
                    "groups": "two_stage",
                    "crf_lr_mult": 10.0,
                },
                "schedule": {"name": "step", "step_size": 2000, "gamma": 0.1},
                "train": {"steps": 4000, "batch_size": 20, "eval_every": 1000, "save_every": 500},
                "crf": _DEEPLAB_CRF,
            },
            "tiny": {
                "model": {
                    "name": "joint_deeplab_crf",
                    "options": {**_TINY_DEEPLAB},
                },
                "data": {**_TINY_DATA},
                "optim": {**_TINY_ADAM, "lr": 2e-5, "groups": "two_stage", "crf_lr_mult": 500.0},
                "schedule": {"name": "constant"},
                # batch 8 as in stage 1: with 4 the 60 steps were noisy (val mIoU from the same
                # stage 1, batch 4 -> 8: project's scenes 63.26 -> 68.83, texture 18.95 ->
                # 19.26, shapes 43.78 -> 43.38). Best of steps 0-60 by held-out mIoU: stage 1
                # + CRF -> joint, val: project's 58.05 -> 60.69, look-alike 69.07 -> 77.11,
                # shapes seed 1 33.70 -> 37.50; texture seed 0 keeps step 0: at step 20 it
                # was 1.1-2.0 below step 0 on the held-out images with this preset, the CRF at
                # 1e-3, T = 10 in training, the CNN at 1e-4, SGD 1e-3 (-8.3) and 112-px crops
                "train": {
                    **_TINY_TRAIN,
                    "steps": 60,
                    "batch_size": 8,
                    "save_every": 20,
                    "select_every": 20,
                },
                "crf": _DEEPLAB_CRF,
            },
        },
        first_stage="deeplab",
        preset_notes={
            "paper": "stage 2 from a deeplab run (init=), SGD 1e-4 CNN / 1e-3 CRF, 4k steps",
            "tiny": "stage 2 from the tiny deeplab and its chosen CRF, Adam 2e-5 (CRF 1e-2), 60 "
            "steps of batch 8, best of steps 0-60 on held-out images",
        },
    ),
    "contextual": Recipe(
        "Contextual deep CRF (Lin et al. 2016): multi-scale FeatMap-Nets, CNN unary and pairwise "
        "potentials (surrounding, above/below), piecewise training, 3 mean-field iterations",
        {
            "paper": {
                "model": {
                    "name": "contextual_crf",
                    "options": {**_CONTEXTUAL_MODEL, "width": 1.0},
                },
                "data": {
                    "dataset": "voc",
                    "train_split": "trainaug",
                    "crop_size": 400,
                    "scale_min": 0.7,
                    "scale_max": 1.2,
                    "flip": True,
                },
                # lr 1e-4 for the VGG layers, 1e-3 (x10) for the new ones
                "optim": {
                    "name": "sgd",
                    "lr": 1e-4,
                    "momentum": 0.9,
                    "weight_decay": 5e-4,
                    "head": _CONTEXTUAL_NEW_LAYERS,
                    "head_lr_mult": 10.0,
                    "edges_per_update": 2000,
                },
                "schedule": {"name": "step", "step_size": 20000, "gamma": 0.1},
                "train": {"steps": 40000, "batch_size": 1, "eval_every": 4000, "save_every": 2000},
                "crf": _DEEPLAB_CRF,
            },
            "tiny": {
                "model": {
                    "name": "contextual_crf",
                    "init": "kaiming",
                    # the paper's structure on a CPU: separate FeatMap-Nets on three scales with
                    # the sliding pyramid, trained from scratch, so batch norm (a thin VGG dies
                    # without it), VGG blocks 1-3 at stride 4: a 110-px image gives a ~33 x 33
                    # graph, the paper's 35 x 35, and the range box and pyramid windows cover
                    # the paper's share of the image
                    "options": {
                        **_CONTEXTUAL_MODEL,
                        "width": 0.0625,
                        "featmap_options": {
                            **_CONTEXTUAL_MODEL["featmap_options"],
                            "output_stride": 4,
                            "blocks": 3,
                            "fc6_kernel": 1,
                            "fc6_channels": 64,
                            "norm": "batch",
                        },
                    },
                },
                "data": {**_TINY_DATA, "crop_size": 96, "scale_min": 0.7, "scale_max": 1.2},
                "optim": {
                    **_TINY_ADAM,
                    "lr": 3e-3,
                    "head": _CONTEXTUAL_NEW_LAYERS,
                    "edges_per_update": 8000,
                },
                "schedule": {"name": "poly", "warmup_steps": 20},
                "train": {**_TINY_TRAIN, "steps": 500, "batch_size": 4},
                "crf": _DEEPLAB_CRF,
            },
        },
        preset_notes={
            "paper": "VOC trainaug, SGD lr 1e-4 (new layers x10), 2,000 edges per "
            "Pairwise-Net sub-iteration, scales 0.7-1.2 and flips",
            "tiny": "width 1/16, VGG blocks 1-3 with batch norm at stride 4, 96 px crops, batch 4, "
            "Adam 3e-3, 500 steps",
        },
    ),
}


def list_recipes() -> str:
    """One line per recipe and preset (``deepcrf train --list``)."""
    lines = []
    for name, recipe in RECIPES.items():
        lines.append(f"{name:<10} {recipe.description}")
        for preset in recipe.presets:
            note = recipe.preset_notes.get(preset, "")
            lines.append(f"  --preset {preset:<6} {note}")
    return "\n".join(lines)


def _preset(recipe: str, preset: str) -> dict:
    if recipe not in RECIPES:
        raise ConfigError(
            f"recipe: unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)} "
            "or give a YAML file"
        )
    presets = RECIPES[recipe].presets
    if preset not in presets:
        raise ConfigError(
            f"--preset: recipe {recipe!r} has no preset {preset!r}; choose one of "
            f"{', '.join(presets)}"
        )
    return presets[preset]


def resolve_config(
    recipe: str,
    preset: str | None = None,
    overrides: list[str] = (),
    data_root: str | None = None,
) -> Config:
    """The config of a recipe name (with ``preset``, default ``paper``) or a YAML file,
    then ``data_root`` (``--data-root``), then the ``--set`` ``overrides``."""
    from .config import apply_overrides

    path = Path(recipe)
    if recipe not in RECIPES and (path.suffix in (".yaml", ".yml") or path.is_file()):
        if preset is not None:
            raise ConfigError("--preset: not used with a YAML config file (it is complete)")
        config = Config.from_dict(load_yaml(path), where=str(path))
    else:
        preset = preset or "paper"
        values = merge_dict({"recipe": recipe, "preset": preset}, _preset(recipe, preset))
        config = Config.from_dict(values, where=f"recipe {recipe} --preset {preset}")
    if data_root is not None:
        config.data.root = str(data_root)
    return apply_overrides(config, list(overrides)) if overrides else config


#: data keys a first stage takes from the recipe's config (augmentation stays its own)
_SHARED_DATA_KEYS = (
    "dataset",
    "root",
    "train_split",
    "val_split",
    "images",
    "masks",
    "workers",
    "val_images",
    "holdout",
    "synthetic_train",
    "synthetic_val",
    "synthetic_size",
)


def first_stage_config(config: Config) -> Config | None:
    """The config of the run a recipe starts from (None when it has none): the first-stage
    recipe with the same preset, data, seed, devices and progress, plus ``stage1``."""
    recipe = RECIPES.get(config.recipe)
    if recipe is None or recipe.first_stage is None:
        return None
    values = merge_dict(
        {"recipe": recipe.first_stage, "preset": config.preset},
        _preset(recipe.first_stage, config.preset or "paper"),
    )
    data = {k: v for k, v in config.to_dict()["data"].items() if k in _SHARED_DATA_KEYS}
    values = merge_dict(values, {"data": data, "seed": config.seed})
    train = config.train
    values = merge_dict(
        values,
        {
            "train": {
                "device": train.device,
                "amp": train.amp,
                "threads": train.threads,
                "progress": train.progress,
            }
        },
    )
    values["model"] = merge_dict(
        values.get("model", {}),
        {"normalize": config.model.normalize, "num_classes": config.model.num_classes},
    )
    values = merge_dict(values, config.stage1)
    return Config.from_dict(values, where="stage1")
