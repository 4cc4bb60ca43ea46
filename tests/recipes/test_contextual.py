"""The contextual recipe: one tiny training step, resume, ablation switches, eval of the run."""

from __future__ import annotations

import pytest
import torch
from recipe_settings import FAST

from deepcrf.models import build
from deepcrf.recipes import load_run, main, resolve_config
from deepcrf.recipes.contextual import (
    ContextualOptimizer,
    build_contextual_optimizer,
    refine_step,
)
from deepcrf.recipes.evaluate import evaluate_model

CTX_FAST = [*FAST, "data.crop_size=48", "optim.edges_per_update=100"]


def _config(voc_tree, *extra):
    return resolve_config("contextual", "tiny", [*CTX_FAST, *extra], data_root=str(voc_tree))


def test_tiny_step_trains_and_the_run_evaluates(voc_tree, tmp_path):
    out = tmp_path / "run"
    result = main(_config(voc_tree), out)
    assert result["step"] == 2 and 0 <= result["miou"] <= 1
    run = load_run(out)
    assert run.model.relations == ("surrounding", "above_below")
    from deepcrf.recipes.data import build_dataset

    cfg = _config(voc_tree)
    val = build_dataset(cfg.data, "val", run.num_classes, False, "imagenet", 0)
    plain = evaluate_model(run, val, progress=False)
    refined = evaluate_model(run, val, crf=run.crf, progress=False)
    assert set(plain) >= {"miou", "pixel_acc", "iou"} and 0 <= refined["miou"] <= 1


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(voc_tree, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    steps = ["train.steps=3"]
    main(_config(voc_tree, *steps), full)
    assert main(_config(voc_tree, *steps), killed, stop_after=1)["stopped"]
    main(_config(voc_tree, *steps), killed, resume=True)
    a, b = load_run(full).model.state_dict(), load_run(killed).model.state_dict()
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5


def test_refinement_stage_trains_the_refinement_network_alone(voc_tree, tmp_path):
    """Stage 2 (init= the CRF run, model.options.refine_net=true) moves only the refinement
    network, keeps batch-norm statistics, and eval/predict --model then use its output."""
    first, second = tmp_path / "crf", tmp_path / "refine"
    main(_config(voc_tree), first)
    cfg = _config(voc_tree, f"init={first}", "model.options.refine_net=true", "train.steps=3")
    result = main(cfg, second)
    assert result["step"] == 3
    crf, refined = load_run(first).model, load_run(second).model
    assert crf.refine_net is None and refined.refine_net is not None
    before, after = crf.state_dict(), refined.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. running statistics
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        probs = refined(x)
    assert probs.shape == (1, crf.num_classes, 20, 28)  # stride 2 of the image
    assert torch.allclose(probs.sum(1), torch.ones(1, 20, 28), atol=1e-5)
    from deepcrf.recipes.data import build_dataset

    val = build_dataset(cfg.data, "val", crf.num_classes, False, "imagenet", 0)
    assert 0 <= evaluate_model(load_run(second), val, progress=False)["miou"] <= 1


def test_refine_step_moves_the_refinement_network_only():
    tiny = resolve_config("contextual", "tiny", ["model.options.refine_net=true"])
    options = {**tiny.model.options, "refine_net": True}
    model = build("contextual_crf", 3, **options).train()
    opt = build_contextual_optimizer(model, tiny.optim)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(2, 3, 40, 40), torch.randint(0, 3, (2, 40, 40))
    loss = refine_step(model, x, y, opt.main)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert loss > 0 and changed and all(k.startswith("refine_net.") for k in changed)
    assert any("running_mean" in k for k in before)  # the frozen batch norms kept theirs


def test_unary_only_switch(voc_tree, tmp_path):
    cfg = _config(voc_tree, "model.relations=[]")
    assert cfg.model.relations == []
    result = main(cfg, tmp_path / "unary")
    model = load_run(tmp_path / "unary").model
    assert model.relations == () and len(model.pairwise_nets) == 0 and result["step"] == 2


@pytest.mark.parametrize(
    ("options", "featmaps", "unaries", "pairwise", "channels"),
    [
        ({}, 3, 1, 2, 3 * 3 * 32),
        ({"shared_featmap": True}, 1, 1, 2, 3 * 3 * 32),
        ({"relations": []}, 1, 1, 0, 3 * 3 * 32),
        ({"unary_nets": 3}, 5, 3, 2, 3 * 3 * 32),
        ({"unary_nets": 2, "shared_featmap": True}, 1, 2, 2, 3 * 3 * 32),
        ({"featmap_options": {"pyramid_windows": []}}, 3, 1, 2, 3 * 32),
        ({"featmap_options": {"scales": [1.2]}}, 3, 1, 2, 3 * 32),
    ],
)
def test_ablation_switches_build_the_right_networks(options, featmaps, unaries, pairwise, channels):
    model = build("contextual_crf", 4, width=0.0625, **options)
    assert len(model.featmaps) == featmaps
    assert len(model.unary_nets) == unaries and len(model.pairwise_nets) == pairwise
    assert model.featmaps[0].out_channels == channels
    assert all(net.in_channels == 2 * channels for net in model.pairwise_nets)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        q = model(x)
    assert q.shape == (2, 4, 4, 4)
    assert torch.allclose(q.sum(1), torch.ones(2, 4, 4), atol=1e-5)
    labels = torch.randint(0, 4, (2, 48, 48))
    assert torch.isfinite(model(x, labels))


def test_optimizer_keeps_pairwise_nets_apart_with_the_paper_rates():
    cfg = resolve_config("contextual", "paper").optim
    model = build("contextual_crf", 3, width=0.0625)
    opt = build_contextual_optimizer(model, cfg)
    assert isinstance(opt, ContextualOptimizer)
    pair = {id(p) for g in opt.pairwise.param_groups for p in g["params"]}
    assert pair == {id(p) for p in model.pairwise_parameters()}
    lrs = {
        id(p): g["lr"]
        for g in opt.main.param_groups
        for p in g["params"]
        if "bias" not in g["name"]
    }
    assert lrs[id(model.featmaps[0].features[0].weight)] == pytest.approx(1e-4)
    assert lrs[id(model.featmaps[0].block6[0][0].weight)] == pytest.approx(1e-3)
    assert lrs[id(model.unary_net.fc1.weight)] == pytest.approx(1e-3)
    state = opt.state_dict()
    assert set(state) == {"main", "pairwise"}
    opt.load_state_dict(state)


def test_bad_settings_name_their_key(voc_tree, tmp_path):
    with pytest.raises(ValueError, match=r"model\.relations"):
        main(
            resolve_config(
                "deeplab", "tiny", [*FAST, "model.relations=[]"], data_root=str(voc_tree)
            ),
            tmp_path / "a",
        )
    with pytest.raises(ValueError, match=r"optim\.accumulate"):
        main(_config(voc_tree, "optim.accumulate=2"), tmp_path / "b")
    with pytest.raises(ValueError, match=r"data\.crop_size"):
        main(_config(voc_tree, "data.crop_size=4"), tmp_path / "c")
    with pytest.raises(ValueError, match=r"model\.options\.refine_net.*init="):
        main(_config(voc_tree, "model.options.refine_net=true"), tmp_path / "d")


def test_one_class_is_refused(voc_tree, tmp_path):
    with pytest.raises(ValueError, match=r"at least 2 classes"):
        main(_config(voc_tree, "model.num_classes=1"), tmp_path / "one")
