"""One serialisable configuration per training run: dataclasses <-> YAML, ``--set`` overrides.

A run's config has the sections ``model``, ``data``, ``optim``, ``schedule``, ``train`` and
``crf`` (the dense CRF's post-processing parameters, ``deepcrf.params.CRFParams`` values),
``crf_search`` (choose ``crf`` on the run's own images at the end), plus ``recipe``,
``seed``, ``init``, ``backbone_weights``, ``crf_from_init`` and (joint only) ``stage1``.

``apply_overrides(config, ["optim.lr=0.01", "model.options.width=0.125"])`` sets dotted keys;
values are parsed as YAML (``1e-3`` a float, ``[1, 2]`` a list, ``null`` None). Unknown keys
are errors listing the valid ones; values are type-checked against the field's annotation.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepcrf.params import CRFParams

__all__ = [
    "CRFSearchConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "load_yaml",
    "merge_dict",
    "parse_override",
    "save_yaml",
]


class ConfigError(ValueError):
    """A bad config key or value (the message names the dotted key)."""


@dataclass
class ModelConfig:
    """The network: a ``deepcrf.models`` name, its constructor options, its input mode."""

    name: str = "deeplab_largefov"
    num_classes: int | None = None  # None: the dataset's
    normalize: str = "imagenet"  # deepcrf.data.transforms.normalize mode
    init: str = "default"  # default | kaiming (He init of the VGG body, training from scratch)
    options: dict = field(default_factory=dict)  # constructor options (width, dropout, crf)
    # contextual_crf: spatial relations of the Pairwise-Nets ([]: unary only); None: the
    # model's own default (every relation)
    relations: list | None = None


@dataclass
class DataConfig:
    """Dataset, splits and augmentation (``dataset``: voc, cityscapes, folder, synthetic)."""

    dataset: str = "voc"
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    images: str = "images"  # folder dataset: sub-folders of root
    masks: str = "masks"
    crop_size: int = 321
    scale_min: float = 1.0
    scale_max: float = 1.0
    flip: bool = True
    label_stride: int = 1  # 8: loss on labels sub-sampled to the stride-8 scores (DeepLab)
    workers: int = 0
    val_images: int | None = None  # periodic validation on the first N val images (None: all)
    # training images never trained on (recipes.holdout): 0 off, a fraction 0 < h < 1 or a
    # number of images, chosen by file name; the run chooses its CRF and its best checkpoint
    # (train.select_every) on them
    holdout: float = 0.0
    synthetic_train: int = 200  # synthetic dataset: scenes per split and their size
    synthetic_val: int = 40
    synthetic_size: list = field(default_factory=lambda: [128, 128])


@dataclass
class OptimConfig:
    """Optimiser and Caffe's per-group multipliers (biases x2 without decay, head x10/x20)."""

    name: str = "sgd"  # sgd | adam
    lr: float = 1e-3
    momentum: float = 0.9
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 5e-4
    bias_lr_mult: float = 2.0
    bias_decay_mult: float = 0.0
    head: list = field(default_factory=list)  # name prefixes of new classifier layers
    head_lr_mult: float = 10.0
    crf_lr_mult: float = 1.0  # CRF kernel weights and bandwidths (no weight decay)
    compat_lr_mult: float = 1.0  # CRF compatibility matrix
    freeze: list = field(default_factory=list)  # name prefixes left untrained
    groups: str = "caffe"  # caffe | two_stage (Schwing & Urtasun, deepcrf.nn)
    accumulate: int = 1  # micro-batches per optimiser step (effective batch)
    clip_grad_norm: float | None = None
    edges_per_update: int = 2000  # contextual: edges per Pairwise-Net sub-iteration (§8.2)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule over optimiser steps, with an optional linear warm-up."""

    name: str = "step"  # step | poly | constant
    step_size: int = 2000
    gamma: float = 0.1
    power: float = 0.9
    warmup_steps: int = 0
    warmup_factor: float = 0.1


@dataclass
class TrainConfig:
    """Length, batch, devices, logging and saving."""

    steps: int = 6000
    batch_size: int = 20
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "none"  # none | bf16 | fp16 (CUDA only; the CRF stays float32)
    threads: int | None = None  # torch CPU threads per process (None: torch's default)
    eval_every: int = 0  # 0: only at the end
    # N > 0: score the model on the held-out training images (data.holdout) at step 0, every
    # N steps and at the end, and finish with the best of those weights (early stopping)
    select_every: int = 0
    save_every: int = 500
    log_every: int = 10
    progress: bool = True


@dataclass
class CRFSearchConfig:
    """Choose the run's ``crf`` at the end of training on its own images (``crf_choice``)."""

    images: int = 0  # 0: keep the crf section as given; N: search on the first N images
    split: str | None = None  # None: data.train_split (whole images, no augmentation)
    iterations: int = 10  # mean-field iterations of every grid point
    grid: dict = field(default_factory=dict)  # refine() name -> values ({}: the tiny grid)


@dataclass
class Config:
    """A training run's complete configuration (saved resolved as the run's config.yaml)."""

    recipe: str = "custom"
    preset: str | None = None
    seed: int = 0
    init: str | None = None  # run folder or .safetensors to start from
    backbone_weights: str | None = None  # torchvision vgg16 .pth (ImageNet)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    crf: dict = field(default_factory=lambda: CRFParams().to_dict())
    crf_search: CRFSearchConfig = field(default_factory=CRFSearchConfig)
    # models ending in a CRF start it from the crf parameters the init run carries
    crf_from_init: bool = True
    stage1: dict = field(default_factory=dict)  # joint: overrides of the stage-1 run

    def to_dict(self) -> dict:
        """Plain nested dict (YAML/JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> Config:
        """Build and validate from a nested dict; missing keys take the defaults."""
        return _build(cls, values, "", where)

    def crf_params(self) -> CRFParams:
        """The post-processing CRF parameters of this run."""
        return CRFParams.from_dict(self.crf, source="crf")


# ------------------------------------------------------------------ building and checking
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_value(value: Any, hint: Any, key: str) -> Any:
    """``value`` converted to the annotation ``hint`` or a ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    expected = origin or hint
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif expected is str:
        if isinstance(value, str):
            return value
    elif expected is list:
        if isinstance(value, (list, tuple)):
            return list(value)
    elif expected is dict:
        if isinstance(value, dict):
            return dict(value)
    else:  # pragma: no cover - every annotation above is handled
        return value
    name = getattr(expected, "__name__", str(expected))
    allow_none = " or null" if type(None) in typing.get_args(hint) else ""
    raise ConfigError(f"{key}: expected {name}{allow_none}, got {value!r}")


def _build(cls, values: Any, prefix: str, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the config'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        keys = ", ".join(f"{prefix}{k}" for k in unknown)
        raise ConfigError(
            f"{where}: unknown key(s) {keys}; valid keys: "
            + ", ".join(f"{prefix}{k}" for k in fields)
        )
    hints = _hints(cls)
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.", where)
        else:
            kwargs[name] = _check_value(value, hint, f"{prefix}{name}")
    config = cls(**kwargs)
    if cls is Config:
        _validate(config)
    return config


def _validate(config: Config) -> None:
    """Cross-field checks with messages naming the key."""
    try:
        CRFParams.from_dict(config.crf, source="crf")
    except ValueError as exc:  # names the bad parameter
        raise ConfigError(str(exc)) from None
    checks = [
        ("optim.name", config.optim.name in ("sgd", "adam"), "sgd or adam"),
        ("model.init", config.model.init in ("default", "kaiming"), "default or kaiming"),
        ("optim.groups", config.optim.groups in ("caffe", "two_stage"), "caffe or two_stage"),
        ("optim.lr", config.optim.lr > 0, "a positive number"),
        ("optim.accumulate", config.optim.accumulate >= 1, "an integer >= 1"),
        ("optim.edges_per_update", config.optim.edges_per_update >= 1, "an integer >= 1"),
        (
            "schedule.name",
            config.schedule.name in ("step", "poly", "constant"),
            "step, poly or constant",
        ),
        ("schedule.step_size", config.schedule.step_size >= 1, "an integer >= 1"),
        ("train.steps", config.train.steps >= 1, "an integer >= 1"),
        ("crf_search.images", config.crf_search.images >= 0, "an integer >= 0"),
        ("crf_search.iterations", config.crf_search.iterations >= 1, "an integer >= 1"),
        ("train.batch_size", config.train.batch_size >= 1, "an integer >= 1"),
        ("train.amp", config.train.amp in ("none", "bf16", "fp16"), "none, bf16 or fp16"),
        ("train.save_every", config.train.save_every >= 0, "an integer >= 0"),
        ("train.eval_every", config.train.eval_every >= 0, "an integer >= 0"),
        ("train.select_every", config.train.select_every >= 0, "an integer >= 0"),
        (
            "data.holdout",
            config.data.holdout >= 0
            and (config.data.holdout < 1 or config.data.holdout == int(config.data.holdout)),
            "0 (off), a fraction 0 < h < 1 or a whole number of images",
        ),
        ("train.log_every", config.train.log_every >= 1, "an integer >= 1"),
        ("data.crop_size", config.data.crop_size >= 1, "a positive integer"),
        ("data.label_stride", config.data.label_stride >= 1, "an integer >= 1"),
        (
            "data.scale_min",
            0 < config.data.scale_min <= config.data.scale_max,
            "0 < scale_min <= scale_max",
        ),
        (
            "data.dataset",
            config.data.dataset in ("voc", "cityscapes", "folder", "synthetic"),
            "voc, cityscapes, folder or synthetic",
        ),
    ]
    for key, ok, what in checks:
        if not ok:
            raise ConfigError(f"{key}: expected {what}, got {_get(config, key)!r}")
    if config.train.select_every and not config.data.holdout:
        raise ConfigError(
            "train.select_every: selects the best checkpoint on held-out training images; set "
            "data.holdout (a fraction or a number of images) or train.select_every=0"
        )


def _get(config: Config, key: str) -> Any:
    obj: Any = config
    for part in key.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def _yaml():
    try:
        import yaml
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("deepcrf train needs PyYAML: pip install 'deepcrf[train]'") from None
    return yaml


# ------------------------------------------------------------------ overrides
def merge_dict(base: dict, changes: dict) -> dict:
    """``base`` updated recursively by ``changes`` (nested dicts merged, others replaced)."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dict(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], YAML-parsed value)."""
    yaml = _yaml()
    if "=" not in text:
        raise ConfigError(f"--set: expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set: bad key in {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse {raw!r} as YAML ({exc})") from None
    return key.split("."), value


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """A new config with every ``key=value`` applied (validated like a loaded config)."""
    data = config.to_dict()
    for text in overrides:
        parts, value = parse_override(text)
        key = ".".join(parts)
        node, cls = data, Config
        for i, part in enumerate(parts[:-1]):
            if cls is not None:  # a section: only its fields
                hints = _hints(cls)
                if part not in hints:
                    where = ".".join(parts[: i + 1])
                    raise ConfigError(
                        f"--set {key}: unknown key {where}; valid: {', '.join(hints)}"
                    )
                hint = hints[part]
                cls = hint if dataclasses.is_dataclass(hint) else None
                if cls is None and typing.get_origin(hint) is None and hint is not dict:
                    raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is a value")
            if not isinstance(node.get(part), dict):  # free-form dicts (model.options, stage1)
                node[part] = {}
            node = node[part]
        if cls is not None and parts[-1] not in _hints(cls):
            prefix = ".".join(parts[:-1])
            valid = ", ".join(f"{prefix}.{k}" if prefix else k for k in _hints(cls))
            raise ConfigError(f"--set {key}: unknown key {key}; valid keys: {valid}")
        node[parts[-1]] = value
    return Config.from_dict(data, where="--set")


# ------------------------------------------------------------------ YAML files
def load_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file, with errors naming the file."""
    yaml = _yaml()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config: no such file {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config: {path} is not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path} must hold a mapping of sections")
    return data


def save_yaml(config: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically)."""
    from deepcrf.fileio import atomic_write_text

    yaml = _yaml()
    text = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)
    return atomic_write_text(Path(path), text)
