"""The one training loop (in the spirit of torchvision's references/segmentation):
``train_one_epoch``, ``evaluate`` and ``main``.

``main(config, out)`` trains ``config`` into the run folder ``out``: ``config.yaml``,
``checkpoint.pt`` (every ``train.save_every`` steps and at the end), ``log.jsonl``,
``metrics.json`` (the last evaluation) and ``model.safetensors`` (final weights: with
``train.select_every``, the best of the checkpoints scored on the held-out training images of
``data.holdout``, ``recipes.holdout``). Under
``torchrun --nproc_per_node N`` it runs DistributedDataParallel; rank 0 logs and saves.

Loss: per-pixel cross-entropy averaged over the valid (non-255) pixels of the *global*
micro-batch (all processes together), so N processes with batch B/N compute the gradients
of one process with batch B. Models with ``needs_image`` (CRF-as-RNN, joint) also get the raw
pixels; their CRF runs in float32 under AMP.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..contextual import ContextualCRF
from ..data.base import IGNORE
from ..fileio import atomic_write_text, remove_stale_temps
from ..metrics import ConfusionMatrix
from .checkpoint import (
    get_rng_state,
    load_checkpoint,
    load_init,
    save_checkpoint,
    save_model,
    set_rng_state,
)
from .config import Config, save_yaml
from .contextual import (
    broadcast_parameters,
    build_contextual_optimizer,
    check_contextual,
)
from .contextual import train_step as contextual_step
from .data import ResumableSampler, build_dataset, dataset_num_classes, eval_indices, train_loader
from .distributed import Dist, all_gather_objects, all_reduce_sum, setup_distributed
from .holdout import Best, split_holdout
from .optim import build_optimizer, lr_factor
from .predict import channels_last

__all__ = [
    "TrainState",
    "TrainingError",
    "build_run_model",
    "evaluate",
    "main",
    "segmentation_loss",
    "train_one_epoch",
]

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, ...); the last good checkpoint is kept."""


@dataclass
class TrainState:
    """Where the run stands: optimiser steps done, epoch, batches of the epoch consumed."""

    step: int = 0
    epoch: int = 0
    position: int = 0


# ---------------------------------------------------------------------------- model
def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def build_run_model(config: Config, num_classes: int) -> nn.Module:
    """The run's model: ``model.name`` with its options, the run's CRF for models that end
    in one, ImageNet VGG-16 weights (``backbone_weights``) and ``init`` weights."""
    from ..models import MODELS, build, load_imagenet_vgg16

    options = dict(config.model.options)
    name = config.model.name
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r}; choose one of {sorted(MODELS)}")
    if getattr(MODELS[name], "needs_image", False):
        options["crf"] = run_crf_options(config)
    if config.model.relations is not None:
        if name != "contextual_crf":
            raise ValueError(f"model.relations: only for contextual_crf, not {name!r}")
        options["relations"] = list(config.model.relations)
    try:
        model = build(name, num_classes, **options)
    except TypeError as exc:
        raise ValueError(f"model.options: {exc}") from None
    model.config["normalize"] = config.model.normalize  # recorded, applied by eval/predict
    bodies = list(getattr(model, "featmaps", [])) or [
        getattr(model, getattr(model, "unary_attr", ""), model)
    ]
    if config.model.init == "kaiming":
        for body in bodies:
            kaiming_body(body)
    if config.backbone_weights:
        path = Path(config.backbone_weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"backbone_weights: no such file {path} (a torchvision vgg16 .pth; nothing is "
                "downloaded at run time)"
            )
        for body in bodies:
            load_imagenet_vgg16(body, path)
    if config.init:
        load_init(model, config.init)
    return model


def carried_crf(config: Config) -> None:
    """Models that end in a CRF and start from another run (``init``) start their CRF from
    the parameters that run carries (``crf_from_init``: a run that chose its CRF on its own
    images hands that choice on); they are written into ``config.crf``, so the saved
    config and the trained run show the CRF the training started from."""
    from ..models import MODELS
    from .checkpoint import _init_weights_file
    from .predict import read_crf_metadata

    model_class = MODELS.get(config.model.name)
    if not (config.crf_from_init and config.init and getattr(model_class, "needs_image", False)):
        return
    carried = read_crf_metadata(_init_weights_file(config.init))
    if carried is not None:
        config.crf = carried.to_dict()


def run_crf_options(config: Config) -> dict[str, Any]:
    """``DenseCRF`` options of a model that ends in a CRF: the run's ``crf`` section (its
    ``iterations`` are the test-time ones) under ``model.options.crf``."""
    params = config.crf_params().to_dict()
    params["eval_iterations"] = params.pop("iterations")
    return {**params, **dict(config.model.options.get("crf") or {})}


def kaiming_body(model: nn.Module) -> None:
    """He-initialise the VGG body (``features.*``, fc6, fc7) for training from scratch: the
    default initialisation shrinks the signal through 15 ReLU layers without batch norm.
    Layers a model initialises on purpose (classifier, score layers, up-samplers) keep theirs."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and (
            name.startswith("features.") or name in ("fc6", "fc7")
        ):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _forward(model: nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
    x = channels_last(batch["image"].to(device, non_blocking=True))
    if getattr(_unwrap(model), "needs_image", False):
        raw = batch["raw_image"].to(device).permute(0, 3, 1, 2).float()
        return model(x, raw)
    return model(x)


def segmentation_loss(
    logits: torch.Tensor, label: torch.Tensor, label_stride: int, global_valid: torch.Tensor
) -> torch.Tensor:
    """Summed cross-entropy over valid pixels divided by ``global_valid`` (the valid pixel
    count of the whole micro-batch over all processes). ``label_stride`` > 1 takes the loss
    on labels sub-sampled to the scores' grid (DeepLab's stride-8 ground truth); other
    size mismatches up-sample the scores bilinearly."""
    if label_stride > 1:
        label = label[:, ::label_stride, ::label_stride]
    if logits.shape[-2:] != label.shape[-2:]:
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
    total = F.cross_entropy(logits.float(), label, ignore_index=IGNORE, reduction="sum")
    return total / global_valid.clamp_min(1).to(total.dtype)


def _stride_label(label: torch.Tensor, stride: int) -> torch.Tensor:
    return label[:, ::stride, ::stride] if stride > 1 else label


# ---------------------------------------------------------------------------- training
@dataclass
class _Loop:
    """Everything ``train_one_epoch`` needs besides the model and data."""

    config: Config
    ctx: Dist
    optimizer: torch.optim.Optimizer
    scaler: Any
    state: TrainState
    out: Path | None
    num_classes: int
    val_set: Any
    log: Any
    bar: Any
    held_set: Any = None
    best: Best | None = None


def _autocast(config: Config, device: torch.device):
    if device.type != "cuda" or config.train.amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if config.train.amp == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _set_lr(optimizer: torch.optim.Optimizer, config: Config, step: int) -> float:
    factor = lr_factor(step, config.train.steps, config.schedule)
    for group in optimizer.param_groups:
        group["lr"] = config.optim.lr * group["lr_mult"] * factor
    return config.optim.lr * factor


def _groups_of(loader, size: int):
    """Lists of ``size`` consecutive batches (a shorter last list at the epoch's end)."""
    group = []
    for batch in loader:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def train_one_epoch(model: nn.Module, loader, loop: _Loop, stop_at: int) -> bool:
    """Train on the rest of the current epoch, or until step ``stop_at``; True when the
    epoch's batches ran out (the caller moves to the next epoch).

    One optimiser step takes ``optim.accumulate`` micro-batches; the loss is the mean over
    the valid pixels of all of them on all processes (counted before the forward passes), so
    any split of one effective batch into processes and micro-batches gives its gradient.
    An incomplete group of micro-batches at the end of an epoch is skipped.
    """
    cfg, ctx, state = loop.config, loop.ctx, loop.state
    accumulate = cfg.optim.accumulate
    device = ctx.device
    params = [p for g in loop.optimizer.param_groups for p in g["params"]]
    model.train()
    for group in _groups_of(loader, accumulate):
        state.position += len(group)
        if len(group) < accumulate:
            break
        tick = time.perf_counter()
        if isinstance(model, ContextualCRF):  # piecewise loss, asynchronous updates
            lr = _set_lr(loop.optimizer, cfg, state.step)
            with _autocast(cfg, device):
                loss = contextual_step(model, group[0], loop.optimizer, cfg, ctx)
            if not math.isfinite(loss):
                _nan_stop(loop)
            state.step += 1
            images = group[0]["image"].shape[0] * ctx.world
            _after_step(model, loop, loss, lr, images, time.perf_counter() - tick)
            if state.step >= stop_at:
                return False
            continue
        labels = [b["label"].to(device) for b in group]
        valid = sum((_stride_label(lab, cfg.data.label_stride) != IGNORE).sum() for lab in labels)
        global_valid = all_reduce_sum(valid.reshape(1).clone(), ctx)
        loss_sum, images = 0.0, 0
        for i, (batch, label) in enumerate(zip(group, labels)):
            last = i + 1 == accumulate
            sync = nullcontext() if (last or not ctx.active) else model.no_sync()
            with sync:
                with _autocast(cfg, device):
                    logits = _forward(model, batch, device)
                loss = segmentation_loss(logits, label, cfg.data.label_stride, global_valid)
                finite = torch.isfinite(loss.detach()).float().reshape(1)
                if not bool(all_reduce_sum(finite, ctx).item() == ctx.world):
                    _nan_stop(loop)
                # DDP averages gradients over processes: scale so they sum to the global mean
                loop.scaler.scale(loss * ctx.world).backward()
            loss_sum += float(loss.detach()) * ctx.world
            images += batch["image"].shape[0] * ctx.world
        lr = _set_lr(loop.optimizer, cfg, state.step)
        if cfg.optim.clip_grad_norm:
            loop.scaler.unscale_(loop.optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad_norm)
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        loop.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        _after_step(model, loop, loss_sum, lr, images, time.perf_counter() - tick)
        if state.step >= stop_at:
            return False
    return True


def _nan_stop(loop: _Loop) -> None:
    kept = loop.out / CHECKPOINT if loop.out is not None else None
    where = (
        f"the last good checkpoint {kept} is kept"
        if kept is not None and kept.is_file()
        else "no checkpoint was written"
    )
    raise TrainingError(
        f"loss is NaN or infinite at step {loop.state.step + 1}; stopping ({where}). Lower "
        "optim.lr, set optim.clip_grad_norm, or check the data."
    )


def _after_step(model, loop: _Loop, loss: float, lr: float, images: int, seconds: float):
    cfg, state = loop.config, loop.state
    if loop.bar is not None:
        loop.bar.update(1)
        loop.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
    if loop.ctx.is_main and (state.step % cfg.train.log_every == 0 or state.step == 1):
        loop.log(
            {
                "step": state.step,
                "epoch": state.epoch,
                "loss": loss,
                "lr": lr,
                "images_per_s": images / max(seconds, 1e-9),
            }
        )
    if cfg.train.eval_every and state.step % cfg.train.eval_every == 0:
        metrics = evaluate(model, loop.val_set, loop.num_classes, loop.ctx, cfg.data.val_images)
        _record_eval(loop, metrics)
        model.train()
    if cfg.train.select_every and state.step % cfg.train.select_every == 0:
        _select(model, loop)
    if (
        cfg.train.save_every
        and state.step % cfg.train.save_every == 0
        and state.step < cfg.train.steps
    ):
        _save(model, loop)


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: nn.Module, dataset, num_classes: int, ctx: Dist, limit: int | None = None
) -> dict:
    """mIoU and accuracies of the network alone on (the first ``limit`` images of) a split,
    each process scoring its share and the confusion matrix all-reduced."""
    from .predict import model_logits

    net = _unwrap(model)
    net.eval()
    cm = ConfusionMatrix(num_classes, IGNORE)
    for i in eval_indices(len(dataset), ctx.rank, ctx.world, limit):
        sample = dataset[i]
        raw = sample["raw_image"].numpy()
        logits = model_logits(net, [raw], ctx.device)
        cm.update(logits[0].argmax(0).cpu(), sample["label"], name=str(sample["name"]))
    cm.all_reduce()
    s = cm.scores()
    return {k: s[k] for k in ("miou", "pixel_acc", "mean_acc", "fw_iou", "iou")}


def _select(model: nn.Module, loop: _Loop) -> None:
    """Score the model on the held-out training images and keep it when it is the best."""
    if loop.best is None:
        return
    miou = evaluate(model, loop.held_set, loop.num_classes, loop.ctx)["miou"]
    model.train()
    score = miou if miou is not None else -math.inf
    kept = loop.best.offer(loop.state.step, score, _unwrap(model))
    if loop.ctx.is_main:
        loop.log({"step": loop.state.step, "event": "select", "holdout_miou": miou, "best": kept})


def _record_eval(loop: _Loop, metrics: dict) -> None:
    if not loop.ctx.is_main:
        return
    entry = {"step": loop.state.step, "eval": metrics}
    loop.log(entry)
    if loop.bar is not None and metrics["miou"] is not None:
        loop.bar.write(f"step {loop.state.step}: val mIoU {100 * metrics['miou']:.2f}")
    if loop.out is not None:
        atomic_write_text(loop.out / "metrics.json", json.dumps(entry, indent=2) + "\n")


# ---------------------------------------------------------------------------- saving
def _params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in _unwrap(model).parameters())


def _save(model: nn.Module, loop: _Loop) -> None:
    """All processes contribute their RNG states; rank 0 writes the checkpoint atomically."""
    rng = all_gather_objects(get_rng_state(), loop.ctx)
    if not loop.ctx.is_main or loop.out is None:
        return
    if not _params_finite(model):
        raise TrainingError(
            f"parameters became NaN/inf at step {loop.state.step}; the last good checkpoint "
            f"{loop.out / CHECKPOINT} is kept"
        )
    payload = {
        "format": "deepcrf.train/1",
        "model": _unwrap(model).state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "scaler": loop.scaler.state_dict(),
        "step": loop.state.step,
        "epoch": loop.state.epoch,
        "position": loop.state.position,
        "world": loop.ctx.world,
        "rng": rng,
        "best": loop.best.to_dict() if loop.best is not None else None,
        "config": loop.config.to_dict(),
    }
    save_checkpoint(loop.out / CHECKPOINT, payload)


# ---------------------------------------------------------------------------- main
def _choose_crf(
    model: nn.Module, config: Config, num_classes: int, out: Path | None, log, held_set=None
):
    """``crf_search``: choose ``config.crf`` on the run's held-out training images when it
    has them (``data.holdout``), else on the first training images (``crf_choice``)."""
    from .crf_choice import choose_crf, save_report

    spec = config.crf_search
    if held_set is not None and spec.split is None:
        dataset = held_set
    else:
        dataset = build_dataset(
            config.data,
            spec.split or config.data.train_split,
            num_classes,
            False,
            config.model.normalize,
            config.seed,
        )
    device = next(_unwrap(model).parameters()).device
    best, report = choose_crf(_unwrap(model).eval(), dataset, config, device)
    if dataset is held_set:
        report["split"] = f"{config.data.train_split} (held out: {len(held_set)} images)"
    config.crf = best.to_dict()
    log({"event": "crf_search", "best": report["best"], "miou": report["best_miou"],
         "baseline": report["baseline"]})  # fmt: skip
    if out is not None:
        save_report(report, out / "crf_search.json")
        save_yaml(config, out / "config.yaml")


def _logger(path: Path | None, ctx: Dist):
    def log(entry: dict) -> None:
        if path is None or not ctx.is_main:
            return
        entry = {"time": round(time.time(), 3), **entry}
        with open(path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")

    return log


def _prepare_folder(out: Path, resume: bool, ctx: Dist) -> None:
    ckpt = out / CHECKPOINT
    if resume:
        if not ckpt.is_file():
            raise FileNotFoundError(
                f"--resume: {out} has no {CHECKPOINT} to resume from (run without --resume)"
            )
        return
    if ckpt.is_file() or (out / WEIGHTS).is_file():
        raise ValueError(
            f"--out: {out} already holds a run ({CHECKPOINT} or {WEIGHTS}); pass --resume to "
            "continue it or choose another folder"
        )
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)


def _resolve_classes(config: Config) -> tuple[Config, int]:
    if config.model.num_classes is None:
        config.model.num_classes = dataset_num_classes(config.data)
    if config.model.num_classes < 1:
        raise ValueError(f"model.num_classes: expected >= 1, got {config.model.num_classes}")
    return config, config.model.num_classes


def _finished(out: Path) -> bool:
    return (out / WEIGHTS).is_file() and (out / "metrics.json").is_file()


def main(
    config: Config, out: str | Path | None, resume: bool = False, stop_after: int | None = None
) -> dict:
    """Train ``config`` into the run folder ``out``; returns the final evaluation.

    ``resume`` continues from ``out/checkpoint.pt`` (the run's own saved config is used).
    ``stop_after`` stops once that many steps are done, like a killed run (for tests and
    time-boxed jobs; the checkpoint is written first).
    """
    ctx = setup_distributed(config.train.device)
    try:
        return _with_stages(config, Path(out) if out is not None else None, resume, stop_after, ctx)
    finally:
        ctx.close()


def _with_stages(config: Config, out: Path | None, resume: bool, stop_after, ctx: Dist) -> dict:
    """Recipes trained from another recipe's run (CRF-as-RNN from FCN-8s, joint stage 2 from
    DeepLab) train that run first, into ``out/<recipe>``, when ``init`` is not given."""
    from .recipes import first_stage_config

    stage = first_stage_config(config)
    if stage is not None and out is not None and config.init is None:
        stage_out = out / stage.recipe
        if not _finished(stage_out):
            if ctx.is_main:
                print(f"training the first stage ({stage.recipe}) into {stage_out}")
            stage_resume = resume and (stage_out / CHECKPOINT).is_file()
            result = _with_stages(stage, stage_out, stage_resume, stop_after, ctx)
            if result.get("stopped"):
                return result
        config.init = str(stage_out)
        resume = resume and (out / CHECKPOINT).is_file()
    return _main(config, out, resume, stop_after, ctx)


def _main(config: Config, out: Path | None, resume: bool, stop_after, ctx: Dist) -> dict:
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    if out is not None:
        _prepare_folder(out, resume, ctx)
        ctx.barrier()
    checkpoint = None
    if resume and out is not None:
        remove_stale_temps(out)
        checkpoint = load_checkpoint(out / CHECKPOINT)
        config = Config.from_dict(checkpoint["config"], where=f"{out / CHECKPOINT}")
        if checkpoint["world"] != ctx.world:
            raise ValueError(
                f"--resume: the checkpoint was written by {checkpoint['world']} processes, "
                f"this job has {ctx.world}; resume with the same --nproc_per_node"
            )
    config, num_classes = _resolve_classes(config)
    if checkpoint is None:
        carried_crf(config)
    if ctx.is_main and config.preset == "paper" and not (config.init or config.backbone_weights):
        print(
            "note: training from scratch; the paper starts from ImageNet VGG-16: "
            "--set backbone_weights=vgg16.pth (torchvision's vgg16 state dict)"
        )
    torch.manual_seed(config.seed * 1000 + ctx.rank)

    model = build_run_model(config, num_classes).to(ctx.device)
    normalize = config.model.normalize
    train_set = build_dataset(
        config.data, config.data.train_split, num_classes, True, normalize, config.seed
    )
    val_set = build_dataset(
        config.data, config.data.val_split, num_classes, False, normalize, config.seed
    )
    held_set = None
    if config.data.holdout:
        whole = build_dataset(
            config.data, config.data.train_split, num_classes, False, normalize, config.seed
        )
        train_set, held_set = split_holdout(
            train_set, whole, config.data.holdout, config.data.train_split
        )
    per_rank = config.train.batch_size // ctx.world
    if per_rank * ctx.world != config.train.batch_size:
        raise ValueError(
            f"train.batch_size: {config.train.batch_size} does not split evenly over "
            f"{ctx.world} processes"
        )
    if len(train_set) < config.train.batch_size:
        held = "" if held_set is None else f" after data.holdout kept {len(held_set)} back"
        raise ValueError(
            f"data: the {config.data.train_split!r} split has {len(train_set)} training images"
            f"{held}, fewer than train.batch_size {config.train.batch_size}"
        )
    contextual = isinstance(model, ContextualCRF)
    if contextual:
        check_contextual(config, model)
        optimizer = build_contextual_optimizer(model, config.optim)
    else:
        optimizer = build_optimizer(model, config.optim)
    scaler = torch.amp.GradScaler(
        "cuda", enabled=ctx.device.type == "cuda" and config.train.amp == "fp16"
    )
    state = TrainState()
    best = Best() if config.train.select_every else None
    if checkpoint is not None:
        if best is not None and checkpoint.get("best"):
            best = Best(**checkpoint["best"])
        _unwrap(model).load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        state = TrainState(checkpoint["step"], checkpoint["epoch"], checkpoint["position"])
        set_rng_state(checkpoint["rng"][ctx.rank])
    if ctx.active and contextual:
        broadcast_parameters(model, ctx)  # gradients are averaged by train_step
    elif ctx.active:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    log = _logger(out / "log.jsonl" if out is not None else None, ctx)
    if out is not None and ctx.is_main:
        save_yaml(config, out / "config.yaml")
        log(
            {
                "event": "resume" if checkpoint else "start",
                "step": state.step,
                "world": ctx.world,
                "device": str(ctx.device),
                **({"holdout": held_set.names} if held_set is not None else {}),
            }
        )
    sampler = ResumableSampler(train_set, ctx.world, ctx.rank, config.seed)
    loader_batches = len(train_set) // ctx.world // per_rank
    if loader_batches < 1:
        raise ValueError("data: too few training images for one batch per process")
    bar = None
    if ctx.is_main and config.train.progress:
        bar = tqdm(total=config.train.steps, initial=state.step, desc="train", unit="step")
    loop = _Loop(
        config, ctx, optimizer, scaler, state, out, num_classes, val_set, log, bar, held_set, best
    )
    stop_at = config.train.steps if stop_after is None else min(stop_after, config.train.steps)
    if checkpoint is None:
        if best is not None:
            _select(model, loop)  # step 0: the first stage (with its CRF) is a candidate
        _save(model, loop)  # step 0: a run killed at any time can be resumed
    try:
        while state.step < stop_at:
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(state.epoch)
            sampler.set_position(state.epoch, state.position * per_rank)
            loader = train_loader(train_set, sampler, per_rank, config.data.workers)
            if train_one_epoch(model, loader, loop, stop_at):
                state.epoch += 1
                state.position = 0
    finally:
        if bar is not None:
            bar.close()
    every = config.train.select_every
    if best is not None and state.step == config.train.steps and state.step % every:
        _select(model, loop)  # the last weights are a candidate too
    _save(model, loop)
    if state.step < config.train.steps:
        return {"step": state.step, "stopped": True}
    if best is not None and best.model is not None:
        _unwrap(model).load_state_dict(best.model)
        if ctx.is_main:
            log({"event": "selected", "step": best.step, "holdout_miou": best.miou})
    metrics = evaluate(model, val_set, num_classes, ctx, config.data.val_images)
    _record_eval(loop, metrics)
    own_crf = getattr(_unwrap(model), "needs_image", False)  # never given a second CRF
    if config.crf_search.images and ctx.is_main and not own_crf:
        _choose_crf(model, config, num_classes, out, log, held_set)
    if out is not None and ctx.is_main:
        save_model(_unwrap(model), out / WEIGHTS, config.crf_params())
        log({"event": "done", "step": state.step})
    ctx.barrier()
    return {"step": state.step, **metrics}
