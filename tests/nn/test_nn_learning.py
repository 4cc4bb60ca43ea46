"""The layer learns: CRF-only training on synthetic scenes beats the initial Potts CRF."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from deepcrf.data import SyntheticScenes, coarse_probabilities
from deepcrf.metrics import ConfusionMatrix
from deepcrf.nn import DenseCRF

K = 5


def scenes(n, seed):
    data = SyntheticScenes(n, size=(64, 64), num_classes=K, seed=seed)
    images, labels = zip(*[data.generate(i) for i in range(n)])
    image = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    label = torch.from_numpy(np.stack(labels))
    unary = coarse_probabilities(label, K, stride=8, noise=1.0, seed=seed).clamp_min(1e-5).log()
    return unary, image, label


def evaluate(crf, unary, image, label):
    crf.eval()
    with torch.no_grad():
        out = crf(unary, image)
    crf.train()
    miou = ConfusionMatrix(K).update(out.argmax(1), label).scores()["miou"]
    return F.cross_entropy(out, label).item(), miou


def test_training_crf_parameters_lowers_loss_and_raises_miou():
    torch.manual_seed(0)
    train, held_out = scenes(4, seed=1), scenes(2, seed=2)
    crf = DenseCRF(
        K,
        iterations=5,
        eval_iterations=5,
        per_class_weights=True,
        learn_compat=True,
        learn_bandwidths=True,
    )
    before_train, before_held = evaluate(crf, *train), evaluate(crf, *held_out)
    optimizer = torch.optim.Adam(crf.parameters(), lr=0.05)
    for _ in range(30):
        optimizer.zero_grad()
        F.cross_entropy(crf(*train[:2]), train[2]).backward()
        optimizer.step()
    after_train, after_held = evaluate(crf, *train), evaluate(crf, *held_out)
    print(
        f"train loss/mIoU {before_train} -> {after_train}; held-out {before_held} -> {after_held}"
    )
    assert after_train[0] < 0.7 * before_train[0] and after_train[1] > before_train[1] + 0.01
    assert after_held[0] < before_held[0] and after_held[1] > before_held[1]
    assert not torch.allclose(crf.compatibility().detach(), -torch.eye(K))  # compat moved
    assert not torch.allclose(
        crf.bandwidths("bilateral").detach(), torch.tensor([80.0, 80, 13, 13, 13])
    )
