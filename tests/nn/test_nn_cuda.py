"""The layer on CUDA matches the CPU (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deepcrf.nn import DenseCRF

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("learn_bandwidths", [False, True])
def test_cuda_forward_backward_matches_cpu(learn_bandwidths):
    g = torch.Generator().manual_seed(0)
    unary = torch.randn(2, 4, 20, 24, generator=g) * 2
    image = torch.randint(0, 256, (2, 3, 20, 24), generator=g).float()
    target = unary.argmax(1).roll(2, dims=1)
    results = []
    for device in ("cpu", "cuda"):
        crf = DenseCRF(
            4,
            iterations=3,
            learn_compat=True,
            per_class_weights=True,
            learn_bandwidths=learn_bandwidths,
        ).to(device)
        x = unary.to(device).requires_grad_(True)
        with torch.autocast(device, dtype=torch.bfloat16 if device == "cpu" else torch.float16):
            out = crf(x, image.to(device))
        assert out.dtype == torch.float32 and out.device.type == device
        F.cross_entropy(out, target.to(device)).backward()
        results.append(
            [out.detach().cpu(), x.grad.cpu()] + [p.grad.cpu() for p in crf.parameters()]
        )
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * b.abs().max())
