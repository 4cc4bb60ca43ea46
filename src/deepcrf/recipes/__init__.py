"""Training the papers' systems: configs, the one training loop, recipes, running models.

Above ``models``/``data``/``nn``, below ``cli``::

    config = resolve_config("deeplab", "tiny", ["train.steps=100"], data_root="voc/")
    main(config, "runs/deeplab")                       # deepcrf train deeplab ...
    run = load_run("runs/deeplab")                     # model + its CRF parameters
    probs = model_probabilities(run.model, image)      # (L, H, W) softmax
"""

from .config import Config, ConfigError, apply_overrides, load_yaml, save_yaml
from .engine import TrainingError, evaluate, main, segmentation_loss, train_one_epoch
from .evaluate import evaluate_model
from .predict import (
    LoadedRun,
    crf_refine,
    iterate_dataset,
    load_run,
    model_logits,
    model_probabilities,
)
from .recipes import RECIPES, first_stage_config, list_recipes, resolve_config

__all__ = [
    "RECIPES",
    "Config",
    "ConfigError",
    "LoadedRun",
    "TrainingError",
    "apply_overrides",
    "crf_refine",
    "evaluate",
    "evaluate_model",
    "first_stage_config",
    "iterate_dataset",
    "list_recipes",
    "load_run",
    "load_yaml",
    "main",
    "model_logits",
    "model_probabilities",
    "resolve_config",
    "save_yaml",
    "segmentation_loss",
    "train_one_epoch",
]
