"""A deliberately naive, loop-based port of the permutohedral lattice (Adams et al. 2010,
as in Krähenbühl's densecrf) used only as an independent reference in tests."""

from __future__ import annotations

import math

import numpy as np


def reference_lattice_filter(features: np.ndarray, values: np.ndarray, reverse=False):
    """Filter ``values`` (N, C) on ``features`` (N, d) point by point with a dict hash."""
    n, d = features.shape
    table, offsets, weights = reference_lattice_entries(features)
    m = len(table)
    keys = list(table)
    vals = np.zeros((m + 1, values.shape[1]), dtype=np.float64)
    for k in range(n):
        for r in range(d + 1):
            vals[offsets[k, r] + 1] += weights[k, r] * values[k]
    axes = range(d, -1, -1) if reverse else range(d + 1)
    for j in axes:
        new = vals.copy()
        for idx, key in enumerate(keys):
            n1, n2 = reference_neighbours(key, j)
            a = table.get(n1, -1) + 1
            b = table.get(n2, -1) + 1
            new[idx + 1] = vals[idx + 1] + 0.5 * (vals[a] + vals[b])
        vals = new
    alpha = 1.0 / (1.0 + 2.0 ** (-d))
    out = np.zeros_like(values, dtype=np.float64)
    for k in range(n):
        for r in range(d + 1):
            out[k] += weights[k, r] * alpha * vals[offsets[k, r] + 1]
    return out, m


def reference_neighbours(key: tuple, axis: int) -> tuple[tuple, tuple]:
    """The (down, up) neighbours of a lattice ``key`` (d coordinates) along ``axis``
    (0..d): every coordinate -1/+1, except coordinate ``axis`` (< d) +d/-d."""
    d = len(key)
    down = [c - 1 for c in key]
    up = [c + 1 for c in key]
    if axis < d:
        down[axis] = key[axis] + d
        up[axis] = key[axis] - d
    return tuple(down), tuple(up)


def reference_lattice_entries(features: np.ndarray):
    """The lattice of ``features`` (N, d) built point by point as pydensecrf does: the
    vertex table (key -> number, in first-seen order), each point's d+1 vertex numbers
    (N, d+1) (column r: the remainder-r vertex) and barycentric weights (N, d+1) float32."""
    f32 = np.float32
    n, d = features.shape
    inv_std = f32(math.sqrt(2.0 / 3.0) * (d + 1))
    # in double, then float32, as pydensecrf (with NumPy 2 a float32 operand would make
    # the product float32)
    scale = [f32(1.0 / math.sqrt((i + 2) * (i + 1)) * float(inv_std)) for i in range(d)]
    down = f32(1.0 / (d + 1))
    table: dict[tuple, int] = {}
    offsets = np.zeros((n, d + 1), dtype=np.int64)
    weights = np.zeros((n, d + 1), dtype=np.float32)
    for k in range(n):
        f = features[k].astype(np.float32)
        el = [f32(0)] * (d + 1)
        sm = f32(0)
        for j in range(d, 0, -1):
            cf = f32(f[j - 1] * scale[j - 1])
            el[j] = f32(sm - f32(j) * cf)
            sm = f32(sm + cf)
        el[0] = sm
        rem0 = [f32(np.round(f32(down * e)) * (d + 1)) for e in el]
        s = sum(round(r / (d + 1)) for r in rem0)
        rank = [0] * (d + 1)
        for i in range(d):
            for j in range(i + 1, d + 1):
                if f32(el[i] - rem0[i]) < f32(el[j] - rem0[j]):
                    rank[i] += 1
                else:
                    rank[j] += 1
        for i in range(d + 1):
            rank[i] += s
            if rank[i] < 0:
                rank[i] += d + 1
                rem0[i] = f32(rem0[i] + d + 1)
            elif rank[i] > d:
                rank[i] -= d + 1
                rem0[i] = f32(rem0[i] - (d + 1))
        bary = [f32(0)] * (d + 2)
        for i in range(d + 1):
            v = f32(f32(el[i] - rem0[i]) * down)
            bary[d - rank[i]] = f32(bary[d - rank[i]] + v)
            bary[d - rank[i] + 1] = f32(bary[d - rank[i] + 1] - v)
        # pydensecrf: barycentric[0] += 1.0 + barycentric[d+1], in double
        bary[0] = f32(float(bary[0]) + (1.0 + float(bary[d + 1])))
        for r in range(d + 1):
            key = tuple(int(rem0[i]) + (r if rank[i] <= d - r else r - (d + 1)) for i in range(d))
            offsets[k, r] = table.setdefault(key, len(table))
            weights[k, r] = bary[r]
    return table, offsets, weights
