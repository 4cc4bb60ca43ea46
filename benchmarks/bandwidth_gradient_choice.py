"""Which bandwidth gradient the lattice layer uses: direction against the exact Gaussian's.

For L = <g, K q> on a photo crop (random q on the simplex, random g), every estimate of
the per-dimension contraction sum_i f_ia dL/df_ia (all that a bandwidth sees) is compared
with the exact Gaussian kernel's, computed by float64 autograd through the brute-force
filter:

* identity: what ``deepcrf`` computes (``deepcrf.kernel.bandwidth_gradient``), the
  Gaussian-derivative identity evaluated with lattice filters of f_a-weighted values;
* lattice derivative: the derivative of the lattice filter itself with its simplices held
  fixed (d barycentric weights / d features, from the ranks of the elevated coordinates).
  It needs only two slice-like gathers per message, about the plain backward's cost, so
  it would meet a 1.5x budget; this table is why it is not used;
* central finite differences of the lattice filter (features scaled by 1 +- 1e-3 per
  dimension), a check on the lattice derivative that agrees on the spatial kernel and
  only erratically on the bilateral ones: the blur passes values through vertices that
  no point touches, so the filter jumps where such a vertex appears or vanishes, and
  the derivative (simplices fixed) sees none of those jumps.

Prints a markdown table of cosines with the exact contraction.

Usage: python benchmarks/bandwidth_gradient_choice.py [--size 48] [--voc DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from deepcrf.exact import exact_filter
from deepcrf.features import bilateral_features, grid_features
from deepcrf.kernel import bandwidth_gradient
from deepcrf.lattice import _elevated, _simplex_coordinates, build_lattice

ROOT = Path(__file__).resolve().parents[1]
VOC = ROOT.parent / "shared" / "data" / "voc-samples"
KERNELS = {  # name: (sxy, srgb or None for the spatial kernel)
    "spatial 3": (3.0, None),
    "bilateral 80/13": (80.0, 13.0),
    "bilateral 50/5": (50.0, 5.0),
    "bilateral 10/20": (10.0, 20.0),
}


def features(pixels: np.ndarray, sxy: float, srgb: float | None) -> torch.Tensor:
    """(N, d) features of an (H, W, 3) crop: x, y (and r, g, b) over the bandwidths."""
    if srgb is None:
        return grid_features(pixels.shape[:2], sxy)
    return bilateral_features(torch.from_numpy(np.ascontiguousarray(pixels)), sxy, srgb)


def exact_contraction(f: torch.Tensor, q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    f64 = f.double().requires_grad_(True)
    loss = (exact_filter(f64, q.double()) * g.double()).sum()
    (grad,) = torch.autograd.grad(loss, f64)
    return (f64.detach() * grad).sum(0)


def identity_contraction(f: torch.Tensor, q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    lattice = build_lattice(f)
    filtered, filtered_grad = lattice.filter(q), lattice.filter(g, transpose=True)
    return (f * bandwidth_gradient(lattice, f, q, g, filtered, filtered_grad)).sum(0).double()


def lattice_derivative(f: torch.Tensor, q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """sum_i f_ia dL/df_ia of the lattice filter, simplices fixed: weight w_ip of a point's
    vertex p is by_rank[d-p] - by_rank[d-p+1] (indices mod d+1, plus 1 for p = 0) of its
    elevated residuals / (d+1), so dL/d(elevated_j) = (s_p1 - s_p2) / (d+1) with s_p the
    derivative of L by w_ip and p1, p2 the vertices that coordinate j's rank feeds."""
    d = f.shape[1]
    lattice = build_lattice(f)
    forward = lattice.blur(lattice.splat_values(q))
    backward = lattice.blur(lattice.splat_values(g), transpose=True)
    index = lattice.slice_index.long()
    by_vertex = [(g * forward[i]).sum(1) + (q * backward[i]).sum(1) for i in index.t()]
    by_vertex = torch.stack(by_vertex).double() * lattice.alpha  # (d+1, N)
    _, rank, _ = _simplex_coordinates(f.t().contiguous())
    rank = rank.long()
    first, second = (d - rank) % (d + 1), (d + 1 - rank) % (d + 1)
    d_elevated = (by_vertex.gather(0, first) - by_vertex.gather(0, second)) / (d + 1)
    # the elevation is linear: its (d+1, d) matrix is the elevation of the unit vectors
    elevation = _elevated(torch.eye(d)).double()
    d_features = elevation.t() @ d_elevated  # (d, N)
    return (f.double().t() * d_features).sum(1)


def finite_differences(f: torch.Tensor, q: torch.Tensor, g: torch.Tensor, h: float = 1e-3):
    columns = []
    for a in range(f.shape[1]):
        values = []
        for sign in (1.0, -1.0):
            scaled = f.clone()
            scaled[:, a] *= 1 + sign * h
            values.append((build_lattice(scaled).filter(q).double() * g.double()).sum())
        columns.append((values[0] - values[1]) / (2 * h))
    return torch.stack(columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48, help="side of the centre crop")
    parser.add_argument("--labels", type=int, default=4)
    parser.add_argument("--voc", type=Path, default=VOC)
    args = parser.parse_args()
    photos = sorted(p for p in args.voc.glob("*.png") if not p.stem.endswith("_labels"))
    if not photos:
        sys.exit(f"no photos in {args.voc} (pass --voc)")
    torch.manual_seed(0)
    print(
        f"{args.size}x{args.size} centre crops, L = {args.labels}, cosine with the exact "
        "Gaussian's contraction (and of the lattice derivative with finite differences)\n"
    )
    print("| photo | kernel | identity (deepcrf) | lattice derivative | lattice derivative vs FD |")
    print("|---|---|---|---|---|")
    for photo in photos:
        with Image.open(photo) as image:
            pixels = np.asarray(image.convert("RGB"))
        top, left = (pixels.shape[0] - args.size) // 2, (pixels.shape[1] - args.size) // 2
        crop = pixels[top : top + args.size, left : left + args.size]
        for name, (sxy, srgb) in KERNELS.items():
            f = features(crop, sxy, srgb)
            q = torch.softmax(2 * torch.randn(f.shape[0], args.labels), 1)
            g = torch.randn(f.shape[0], args.labels)
            exact = exact_contraction(f, q, g)
            derivative = lattice_derivative(f, q, g)
            cosines = [
                F.cosine_similarity(identity_contraction(f, q, g), exact, dim=0),
                F.cosine_similarity(derivative, exact, dim=0),
                F.cosine_similarity(derivative, finite_differences(f, q, g), dim=0),
            ]
            print(f"| {photo.stem} | {name} | " + " | ".join(f"{c:.3f}" for c in cosines) + " |")


if __name__ == "__main__":
    main()
