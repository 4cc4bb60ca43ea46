"""Permutohedral lattice: fast high-dimensional Gaussian filtering (Adams et al. 2010).

A lattice is built once for a set of feature vectors (one per pixel) and then filters
any number of value channels in time linear in the number of pixels. The construction
reproduces pydensecrf's (Krähenbühl & Koltun) arithmetic step by step in float32 so
that filtered values agree with it to rounding error: same elevation, rounding, rank
tie-breaking, barycentric weights, [1/2, 1, 1/2] blur and the ``alpha`` constant.

Everything is vectorised torch code with no Python loop over points, so the same
implementation runs on CPU and CUDA tensors. Splatting, slicing and the blur are all
weighted gathers: ``embedding_bag``, except on CPU for 1-4 or 8 value channels, where a
CSR product (MKL's) is faster (``_product``); the blur gathers every vertex and its two
neighbours along each of the d+1 lattice axes (a missing neighbour has weight 0).

Several point sets (the images of a batch) are built into one lattice whose vertices
are tagged with the point set they belong to, so one filter call serves a whole batch
and nothing ever leaks from one image to another.
"""

from __future__ import annotations

import itertools
import math
import threading
import warnings
import weakref
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from deepcrf.allocator import tune_allocator
from deepcrf.arrays import transpose_copy
from deepcrf.threads import adaptive, recheck

__all__ = ["Lattice", "LatticeRangeError", "build_lattice", "stack_lattices"]


class LatticeRangeError(ValueError):
    """Features too large for exact integer lattice keys in float32 arithmetic (|f| above
    1e7: bandwidths far too small for the features' range). Keys spread over more cells
    than 62-bit packed codes can index are no error: they take the dense-code path."""


_MAX_PACKED_BITS = 62
_MAX_FEATURE = 1e7  # keeps integer lattice keys exact in float32 arithmetic


class _SliceCache:
    """The (M + N, C) gather table of ``Lattice.slice_values(..., add=...)``: vertex rows,
    then ``add``'s rows. Copies and pickles of a lattice start with an empty one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._entry: tuple[weakref.ref, int, torch.Tensor] | None = None

    def table_with(
        self, add: torch.Tensor, num_vertices: int, width: int | None = None
    ) -> torch.Tensor:
        """The table with ``add`` in its last rows (``width`` columns: ``add``'s, then
        zeros); refilled when ``add`` is another tensor or was modified in place (its
        version changed)."""
        width = add.shape[1] if width is None else width
        if self._entry is not None:
            ref, version, table = self._entry
            if ref() is add and version == add._version and table.shape[1] == width:
                return table
        self._entry = None  # one table at a time: it is as large as ``add``
        table = add.new_empty(num_vertices + add.shape[0], width)
        table[num_vertices:, : add.shape[1]].copy_(add)
        table[num_vertices:, add.shape[1] :].zero_()
        self._entry = (weakref.ref(add), add._version, table)
        return table

    def __reduce__(self):
        return (_SliceCache, ())

    def __deepcopy__(self, memo: dict) -> _SliceCache:
        return _SliceCache()


class _CsrCache(dict):
    """CSR matrices of a lattice's products (``_product``), made on first use. Copies and
    pickles of a lattice start with an empty one (sparse CSR tensors cannot be deep-copied,
    and they are quick to make again)."""

    def __reduce__(self):
        return (_CsrCache, ())

    def __deepcopy__(self, memo: dict) -> _CsrCache:
        return _CsrCache()


@dataclass(frozen=True)
class Lattice:
    """A permutohedral lattice for ``num_points`` points (or a block stack of such lattices).

    Splatting and slicing are weighted gathers stored as embedding-bag inputs, the fastest
    sparse primitive torch has on CPU and GPU:

    Attributes:
        num_points: N, the number of points (all point sets of a batch together).
        num_vertices: M, the number of lattice vertices touched by the points.
        splat_index, splat_offsets, splat_weight: entries grouped by vertex: vertex v sums
            ``splat_weight[e] * values[splat_index[e]]`` over its entries ``e`` starting at
            ``splat_offsets[v]`` (the CSR form of the (M, N) splat matrix).
        slice_index, slice_weight: (N, r) vertices and weights (barycentric times ``alpha``)
            of each point's r entries (r = d+1, or the sum over stacked lattices).
        blur_stencils: per block, (index, weight), both (A, M_block, 3): for each of the
            block's A = d+1 lattice axes, every vertex's new value is the weighted sum of
            itself (1) and its two neighbours along that axis (1/2 each, 0 when missing).
        blocks: vertex offsets of the stacked lattices (``(0, M)`` for a single one).
        scaled: whether per-point scales were folded into splat/slice (see ``scale``).
    """

    num_points: int
    num_vertices: int
    splat_index: torch.Tensor
    splat_offsets: torch.Tensor
    splat_weight: torch.Tensor
    slice_index: torch.Tensor
    slice_weight: torch.Tensor
    blur_stencils: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    blocks: tuple[int, ...]
    scaled: bool = False
    _slice_cache: _SliceCache = field(
        default_factory=_SliceCache, init=False, repr=False, compare=False
    )

    @property
    def device(self) -> torch.device:
        return self.splat_weight.device

    @property
    def num_axes(self) -> int:
        """d+1 blur axes (the largest over the blocks of a stack)."""
        return max(index.shape[0] for index, _ in self.blur_stencils)

    @property
    def alphas(self) -> tuple[float, ...]:
        """Each block's slice constant alpha = 1 / (1 + 2^-d) (pydensecrf's): the slice
        weights are alpha times the splat weights, so slice = alpha · splatᵀ per block."""
        return tuple(_alpha(index.shape[0] - 1) for index, _ in self.blur_stencils)

    @property
    def alpha(self) -> float:
        """The slice constant of a single (not stacked) lattice; see ``alphas``."""
        if len(self.blur_stencils) != 1:
            raise ValueError("alpha: a stacked lattice has one alpha per block (use alphas)")
        return self.alphas[0]

    @cached_property
    def row_sums(self) -> torch.Tensor:
        """The filter applied to all-ones values, (N,): kernel normalisers, computed once."""
        return self.filter(torch.ones(self.num_points, 1, device=self.device))[:, 0]

    def filter(self, values: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """Gaussian-filter ``values`` (N, C) over the lattice; returns (N, C) float32.

        ``transpose=True`` applies the transposed operator (blur axes in reverse order),
        which is what a backward pass needs; pydensecrf calls it ``reverse``.
        """
        values = self._checked(values)
        width = _padded_width(values)
        if width == values.shape[1]:
            return self.slice_values(self.splat_blur(values, transpose))
        out = self.slice_values(self.splat_blur(_pad(values, width), transpose))
        return out[:, : values.shape[1]].contiguous()

    def splat_blur(
        self,
        values: torch.Tensor,
        transpose: bool = False,
        transforms: list[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Splat (N, C) point values and blur them, block by block: (M, C') vertex values.

        ``transforms`` (one (C, C') matrix or None per block) mix each block's channels
        after its blur, which is how a dense CRF applies non-Potts compatibilities on the
        few vertices rather than the many points. Equals ``blur(splat_values(values))``
        with one concatenation instead of three copies.
        """
        blocks = self._blurred_blocks(values, transpose, transforms)
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks)

    def _blurred_blocks(
        self,
        values: torch.Tensor,
        transpose: bool = False,
        transforms: list[torch.Tensor | None] | None = None,
        out: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Each block's splatted, blurred (and transformed) vertex values; with ``out``
        (M, C'), written straight into its rows (no concatenation afterwards)."""
        if transpose and self.scaled:
            raise ValueError("transpose: a lattice with folded scales has no transpose here")
        blocks = []
        parts = zip(self._splat_blocks(values), self.blur_stencils, self.blocks, self.blocks[1:])
        for k, (block, stencil, start, stop) in enumerate(parts):
            transform = None if transforms is None else transforms[k]
            rows = None if out is None else out[start:stop]
            block = _blur_block(block, stencil, transpose, self._csr, k, rows, transform)
            blocks.append(block)
        return blocks

    def filter_add(
        self,
        values: torch.Tensor,
        add: torch.Tensor,
        transforms: list[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """``slice_values(splat_blur(values, transforms=transforms), add=add)``: (N, C').

        The blocks' blurred vertex values are concatenated straight into the gather table
        of the fused slice (see ``slice_values``), one (M, C') copy fewer than the two
        calls; a mean-field iteration of the dense CRF is one call.
        """
        values = self._checked(values)
        mixed = [t for t in transforms or () if t is not None]
        width = mixed[0].shape[1] if mixed else values.shape[1]
        if not self._can_fuse_add(values[:0].new_empty(0, width), add, 0, *mixed, values):
            blocks = self._blurred_blocks(values, False, transforms)
            return self.slice_values(torch.cat(blocks) if len(blocks) > 1 else blocks[0], add)
        padded = _padded_width(values)
        if padded != width and not mixed:
            return self._filter_add_padded(values, add, padded)
        index, weight = self._slice_plus_own_row
        with self._slice_cache.lock:
            table = self._slice_cache.table_with(add, self.num_vertices)
            self._blurred_blocks(values, False, transforms, out=table[: self.num_vertices])
            return _product(index, table, weight, self._csr, "slice+own")

    def _filter_add_padded(self, values: torch.Tensor, add: torch.Tensor, width: int):
        """``filter_add`` without transforms computed on ``width`` channels (``values``' and
        ``add``'s, then zeros), the result narrowed back to ``add``'s channels."""
        index, weight = self._slice_plus_own_row
        with self._slice_cache.lock:
            table = self._slice_cache.table_with(add, self.num_vertices, width)
            self._blurred_blocks(_pad(values, width), out=table[: self.num_vertices])
            out = _product(index, table, weight, self._csr, "slice+own")
        return out[:, : add.shape[1]].contiguous()

    def filter_cost(self, channels: int) -> int:
        """What a whole filter (``filter``, ``filter_add``) of ``channels`` float32 channels
        without gradient costs here, in channels: on the CPU MKL's CSR products cost about
        the same for 1-4 channels, and for 5-8 (``_PADDED_WIDTHS``); elsewhere the cost
        grows with every channel."""
        values = torch.empty(0, channels, device=self.device)
        if channels <= max(_CSR_WIDTHS) and _csr_capable(values):
            return next(w for w in (4, 8) if w >= channels)
        return channels

    def _checked(self, values: torch.Tensor) -> torch.Tensor:
        if values.dim() != 2 or values.shape[0] != self.num_points:
            raise ValueError(
                f"values: expected shape ({self.num_points}, C), got {tuple(values.shape)}"
            )
        return values.float().contiguous()

    def splat_values(self, values: torch.Tensor) -> torch.Tensor:
        """Accumulate point values (N, C) onto the lattice vertices: (M, C)."""
        blocks = self._splat_blocks(values)
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks)

    def _splat_blocks(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Each block's vertex values of the splatted (N, C) point values."""
        values = self._checked(values)
        if _csr_wins(values):
            return [_csr_mm(self._splat_csr(k), values) for k in range(len(self._splat_parts))]
        return [
            F.embedding_bag(index, values, offsets, mode="sum", per_sample_weights=weight)
            for index, offsets, weight in self._splat_parts
        ]

    def _splat_csr(self, block: int) -> torch.Tensor:
        """Block ``block``'s splat as a (M_block, N) CSR matrix (kept with the lattice)."""
        key = ("splat", block)
        if key not in self._csr:
            index, offsets, weight = self._splat_parts[block]
            rows = torch.cat([offsets, offsets.new_tensor([index.numel()])])
            self._csr[key] = _csr_matrix(rows, index, weight, self.num_points)
        return self._csr[key]

    @cached_property
    def _csr(self) -> _CsrCache:
        """The CSR matrices of the CPU products (``_product``), made on first use."""
        return _CsrCache()

    @cached_property
    def _splat_parts(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The splat entries of each block separately: one embedding bag per block keeps
        the two threads' shares of work even when blocks differ in entries per vertex."""
        bounds = [int(e) for e in self.splat_offsets[list(self.blocks[1:-1])].tolist()]
        starts = [0, *bounds]
        stops = [*bounds, self.splat_index.numel()]
        parts = []
        for k, (start, stop) in enumerate(zip(starts, stops)):
            offsets = self.splat_offsets[self.blocks[k] : self.blocks[k + 1]] - start
            parts.append((self.splat_index[start:stop], offsets, self.splat_weight[start:stop]))
        return parts

    def slice_values(
        self, lattice_values: torch.Tensor, add: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Interpolate vertex values (M, C) back at the points: (N, C).

        ``add`` (N, C) is added to the result in the same pass (a mean-field step's unary
        logits): it is kept as N extra rows of the table the slice gathers from, each point
        taking its own row with weight 1, which saves a read and a write of the (N, C)
        result. The copy of ``add`` is reused while ``add`` is unchanged (same storage and
        version); with gradients, or other dtypes, it is a plain addition.
        """
        if add is None or not self._can_fuse_add(lattice_values, add):
            values = lattice_values.contiguous()
            out = _product(self.slice_index, values, self.slice_weight, self._csr, "slice")
            return out if add is None else out + add
        index, weight = self._slice_plus_own_row
        with self._slice_cache.lock:
            table = self._slice_cache.table_with(add, self.num_vertices)
            table[: self.num_vertices].copy_(lattice_values)
            return _product(index, table, weight, self._csr, "slice+own")

    def _can_fuse_add(
        self,
        lattice_values: torch.Tensor,
        add: torch.Tensor,
        rows: int | None = None,
        *sources: torch.Tensor,
    ) -> bool:
        """Whether ``add`` can join the slice's gather table next to ``lattice_values``
        (``rows`` vertex rows: all of them unless given), computed from ``sources`` (no
        gradient through any of them)."""
        return (
            not (lattice_values.requires_grad or add.requires_grad)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in sources))
            and add.dtype == lattice_values.dtype == torch.float32
            and add.shape == (self.num_points, lattice_values.shape[1])
            and add.device == lattice_values.device
            and lattice_values.shape[0] == (self.num_vertices if rows is None else rows)
        )

    @cached_property
    def _slice_plus_own_row(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Slice index/weight (N, r + 1) with each point's own table row, weight 1, last."""
        own = torch.arange(self.num_points, device=self.device, dtype=self.slice_index.dtype)
        index = torch.cat([self.slice_index, (own + self.num_vertices)[:, None]], dim=1)
        weight = torch.cat([self.slice_weight, self.slice_weight.new_ones(self.num_points, 1)], 1)
        return index.contiguous(), weight.contiguous()

    def blur(self, lattice_values: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """Apply the [1/2, 1, 1/2] blur along each lattice axis to (M, C) vertex values.

        Each block of a stack is blurred on its own, along its own d+1 axes only. The blur
        carries no per-point scales, so ``transpose=True`` is valid on scaled lattices too.
        """
        if len(self.blur_stencils) == 1:
            return _blur_block(lattice_values, self.blur_stencils[0], transpose, self._csr, 0)
        out = torch.empty_like(lattice_values)
        for k, (stencil, start, stop) in enumerate(
            zip(self.blur_stencils, self.blocks, self.blocks[1:])
        ):
            values = lattice_values[start:stop]
            out[start:stop] = _blur_block(values, stencil, transpose, self._csr, k)
        return out

    def scale(self, before: torch.Tensor | None, after: torch.Tensor | None) -> Lattice:
        """A lattice computing ``diag(after) @ filter @ diag(before)`` at no extra cost.

        The per-point scales are folded into the splat and slice weights, which is how
        the dense CRF applies its kernel normalisation and weights for free.
        """
        splat_weight, slice_weight = self.splat_weight, self.slice_weight
        if before is not None:  # index_select: several times faster than indexing
            splat_weight = splat_weight * before.float().index_select(0, self.splat_index)
        if after is not None:
            slice_weight = slice_weight * after.float()[:, None]
        return replace(self, splat_weight=splat_weight, slice_weight=slice_weight, scaled=True)


def _alpha(dim: int) -> float:
    """pydensecrf's slice constant for a d-dimensional lattice."""
    return 1.0 / (1.0 + 2.0 ** (-dim))


_OFFSETS: dict[tuple, torch.Tensor] = {}
_OFFSETS_LOCK = threading.Lock()


def _bag_offsets(rows: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Start offsets of ``rows`` bags of ``width`` entries each (a few recent shapes kept):
    ``F.embedding_bag`` builds this ``arange`` anew on every call with a 2-D index, which
    cost ~1/4 of the blur at VOC size."""
    key = (rows, width, dtype, str(device))
    with _OFFSETS_LOCK:
        offsets = _OFFSETS.get(key)
        if offsets is None:
            if len(_OFFSETS) >= 16:
                _OFFSETS.clear()
            offsets = torch.arange(0, rows * width, width, dtype=dtype, device=device)
            _OFFSETS[key] = offsets
        return offsets


def _gather_rows(index: torch.Tensor, table: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(R, C): row i is sum_k weight[i, k] * table[index[i, k]] for (R, K) ``index`` and
    ``weight`` (contiguous): ``F.embedding_bag`` with a 1-D index and cached offsets."""
    rows, width = index.shape
    offsets = _bag_offsets(rows, width, index.dtype, index.device)
    return F.embedding_bag(  # reshape: a copy only for views (a stack's slice columns)
        index.reshape(-1), table, offsets, mode="sum", per_sample_weights=weight.reshape(-1)
    )


#: Value channels for which a CSR product (MKL's, CPU; ``_csr_mm``) beats ``embedding_bag``'s
#: gathers: 1.2-1.7x per product on VOC-size lattices at 4 channels (IRN's two runs of one
#: class and background: its mean field 0.71-0.73x); at 6 (two classes) a whole mean field
#: was no faster (1.04-1.10x), and from ~21 channels CSR is slower. Other widths, and GPUs,
#: keep ``embedding_bag``.
_CSR_WIDTHS = frozenset({1, 2, 3, 4, 8})
_CSR_LOCK = threading.Lock()

#: Channel counts that whole filters (``filter``, ``filter_add``) compute with zero channels
#: added, up to a CSR width whose products cost no more: MKL's kernels fill whole SIMD
#: vectors at 4 and 8 channels. On VOC-size lattices (1 thread, same-run A/B) a filter_add
#: of 3 channels took 0.80x its time padded to 4, of 6 channels 0.84x padded to 8; padding
#: 1, 2 or 9-11 channels gained nothing.
_PADDED_WIDTHS = {3: 4, 5: 8, 6: 8, 7: 8}

#: Channel counts the blur's passes compute with zero channels added (dropped after the
#: last pass): MKL's products with a lattice's (M, M) blur matrices (3 entries a row) run
#: 1-2 dense columns slower than 4. Blurring 1 or 2 channels padded to 4 took 0.60-0.90x
#: the time on VOC photos' lattices at 80/13, 121/5 and 50/5 (1 and 2 threads, same-run
#: A/B; bit-identical), the largest gains on the largest lattices (IRN's 50/5); the splat
#: and slice keep the input's width (padding them too gained nothing on small lattices).
_BLUR_WIDTHS = {1: 4, 2: 4}


def _padded_width(values: torch.Tensor, widths: dict[int, int] | None = None) -> int:
    """The channels CSR products of ``values`` (rows, C) compute with: ``widths[C]``
    (default ``_PADDED_WIDTHS``, for whole filters; ``_BLUR_WIDTHS`` for the blur's
    passes); C where no CSR product runs."""
    c = values.shape[1]
    width = (_PADDED_WIDTHS if widths is None else widths).get(c, c)
    return width if width in _CSR_WIDTHS and _csr_capable(values) else c


def _pad(values: torch.Tensor, width: int) -> torch.Tensor:
    """(rows, C) values followed by ``width`` - C zero channels (a new tensor)."""
    return F.pad(values, (0, width - values.shape[1]))


def _csr_capable(table: torch.Tensor) -> bool:
    """Whether ``table`` may be multiplied by a CSR matrix: float32 on the CPU, no gradient."""
    return (
        table.device.type == "cpu"
        and table.dtype == torch.float32
        and not (table.requires_grad and torch.is_grad_enabled())
    )


def _csr_wins(table: torch.Tensor) -> bool:
    """Whether to multiply ``table`` (rows, C) by a CSR matrix instead of gathering rows."""
    return table.shape[1] in _CSR_WIDTHS and _csr_capable(table)


def _csr_matrix(
    rows: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, width: int
) -> torch.Tensor:
    """A CSR matrix of ``width`` columns from its row offsets, column indices and values."""
    with _CSR_LOCK, warnings.catch_warnings():  # torch says once that CSR tensors are beta
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            rows,
            columns,
            values,
            size=(rows.numel() - 1, width),
            check_invariants=False,
        )


def _product(
    index: torch.Tensor,
    table: torch.Tensor,
    weight: torch.Tensor,
    cache: dict,
    key,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``_gather_rows(index, table, weight)``, as a product with a CSR matrix made once
    (kept in ``cache`` under ``key``) when ``_csr_wins``; written into ``out`` if given.
    Each row's entries are summed in a fixed order whatever the thread count, so results
    do not depend on it."""
    if not _csr_wins(table):
        rows = _gather_rows(index, table, weight)
        return rows if out is None else out.copy_(rows)
    matrix = cache.get(key)
    if matrix is None or matrix.shape[1] != table.shape[0]:
        rows, width = index.shape
        offsets = torch.arange(0, rows * width + 1, width, dtype=index.dtype, device=index.device)
        matrix = _csr_matrix(offsets, index.reshape(-1), weight.reshape(-1), table.shape[0])
        cache[key] = matrix
    return _csr_mm(matrix, table, out)


def _csr_mm(matrix: torch.Tensor, dense: torch.Tensor, out: torch.Tensor | None = None):
    """``matrix @ dense`` for a CSR ``matrix``, into ``out`` (contiguous) or a new tensor:
    ``torch.mm`` zero-fills a new result and copies it before MKL overwrites it; addmm
    with beta 0 into an empty result skips the fill (the products of a narrow mean-field
    iteration were ~1/4 fills and copies)."""
    if out is None:
        out = dense.new_empty(matrix.shape[0], dense.shape[1])
    return torch.addmm(out, matrix, dense, beta=0, out=out)


def _blur_block(
    values: torch.Tensor,
    stencil: tuple[torch.Tensor, torch.Tensor],
    transpose: bool,
    cache: dict,
    block: int,
    out: torch.Tensor | None = None,
    transform: torch.Tensor | None = None,
) -> torch.Tensor:
    """Blur (M, C) values of one lattice axis by axis with its (A, M, 3) stencil (CSR
    products kept in ``cache`` under the block's number, see ``_product``), then mix the
    channels by ``transform`` (C, C') if given; the last step writes into ``out`` (M, C')
    if given (a contiguous block of rows). 1 or 2 channels are blurred as 4
    (``_BLUR_WIDTHS``) where the products are MKL's."""
    index, weight = stencil
    axes = list(range(index.shape[0] - 1, -1, -1) if transpose else range(index.shape[0]))
    channels = values.shape[1]
    width = _padded_width(values, _BLUR_WIDTHS)
    if width != channels:
        values = _pad(values, width)
    for axis in axes:
        last = transform is None and width == channels and axis == axes[-1]
        values = _product(
            index[axis],
            values.contiguous(),
            weight[axis],
            cache,
            ("blur", block, axis),
            out if last else None,
        )
    if width != channels:
        values = values[:, :channels]
        if transform is None:
            return out.copy_(values) if out is not None else values.contiguous()
    if transform is not None:
        values = torch.mm(values, transform, out=out) if out is not None else values @ transform
    return values


def stack_lattices(lattices: list[Lattice]) -> Lattice:
    """One block-diagonal lattice filtering the same points with every lattice at once.

    ``filter`` of the stack returns the sum of the individual filters; ``splat_values`` and
    ``blur`` give each lattice's vertex values in its block (see ``blocks``), so per-block
    label transforms can be applied between blur and slice.
    """
    if not lattices:
        raise ValueError("lattices: expected at least one lattice")
    n = lattices[0].num_points
    if any(lat.num_points != n for lat in lattices):
        raise ValueError("lattices: all lattices must be built on the same points")
    if len(lattices) == 1:
        return lattices[0]
    offsets = [0]
    entries = [0]
    for lat in lattices:
        offsets.append(offsets[-1] + lat.num_vertices)
        entries.append(entries[-1] + lat.splat_index.numel())
    dtype = torch.int32 if max(offsets[-1], entries[-1], n) < 2**31 else torch.long
    splat_offsets = torch.cat(
        [lat.splat_offsets.to(dtype) + start for lat, start in zip(lattices, entries)]
    )
    # the slice tables are stored once, with the column of each point's own row that the
    # fused slice-and-add gathers (``Lattice.filter_add``); slice_index/slice_weight are
    # views of their first columns (a copy of 8 bytes per entry less at the peak)
    device = lattices[0].device
    width = sum(lat.slice_index.shape[1] for lat in lattices)
    index_full = torch.empty(n, width + 1, dtype=dtype, device=device)
    weight_full = torch.empty(n, width + 1, dtype=torch.float32, device=device)
    column = 0
    for lat, start in zip(lattices, offsets):
        stop = column + lat.slice_index.shape[1]
        torch.add(lat.slice_index.to(dtype), start, out=index_full[:, column:stop])
        weight_full[:, column:stop] = lat.slice_weight
        column = stop
    torch.arange(offsets[-1], offsets[-1] + n, dtype=dtype, device=device, out=index_full[:, width])
    weight_full[:, width] = 1.0
    stacked = Lattice(
        num_points=n,
        num_vertices=offsets[-1],
        splat_index=torch.cat([lat.splat_index.to(dtype) for lat in lattices]),
        splat_offsets=splat_offsets,
        splat_weight=torch.cat([lat.splat_weight for lat in lattices]),
        slice_index=index_full[:, :width],
        slice_weight=weight_full[:, :width],
        blur_stencils=tuple(st for lat in lattices for st in lat.blur_stencils),
        blocks=tuple(offsets),
        scaled=any(lat.scaled for lat in lattices),
    )
    stacked.__dict__["_slice_plus_own_row"] = (index_full, weight_full)  # the cached property
    return stacked


def _scale_factors(dim: int, device: torch.device) -> torch.Tensor:
    """Diagonal of the elevation matrix E times the inverse expected std (pydensecrf's)."""
    inv_std_dev = torch.tensor(math.sqrt(2.0 / 3.0) * (dim + 1), dtype=torch.float32).item()
    scales = [1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std_dev for i in range(dim)]
    return torch.tensor(scales, dtype=torch.float32, device=device)


def _elevated(coords: torch.Tensor) -> torch.Tensor:
    """(d+1, N) coordinates on the lattice's hyperplane of (d, N) ``coords``: scaled by
    ``_scale_factors`` and elevated (pydensecrf's recurrence, in float32)."""
    d, n = coords.shape
    scaled = coords * _scale_factors(d, coords.device)[:, None]
    elevated = coords.new_empty(d + 1, n)
    running = elevated[0].zero_()  # the running sum ends as elevated[0]
    term = coords.new_empty(n)
    for j in range(d, 0, -1):  # written in place: no temporaries, no copies
        torch.sub(running, torch.mul(scaled[j - 1], j, out=term), out=elevated[j])
        running += scaled[j - 1]
    return elevated


def _simplex_coordinates(
    coords: torch.Tensor,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Enclosing simplex of each point: remainder-0 vertex, rank permutation, barycentrics.

    ``coords`` is (d, N), one row per feature dimension. Returns ``rem0 / (d+1)`` for the
    first d coordinates, (d, N) float32 holding integers (the remainder-0 vertex is (d+1)
    times that), ``rank`` (d+1, N) small integers (int8 or int16) and ``bary`` (d+1, N)
    float32. Follows pydensecrf's float32 arithmetic (including round-half-to-even and its
    tie-breaking of equal residuals) so that points on simplex boundaries land in the same
    simplex. ``out``: (d+1, N) tensors (rem0 / (d+1) of all d+1 coordinates, rank, bary)
    to write into.
    """
    d = coords.shape[0]
    rounded, rank, bary = _simplex_outputs(coords) if out is None else out
    small = rank.dtype
    elevated = _elevated(coords)

    down = torch.tensor(1.0 / (d + 1), dtype=torch.float32).item()
    torch.round(elevated * down, out=rounded)  # round half to even, as SSE rounding does
    rem0 = rounded * (d + 1)
    residual = elevated - rem0
    # rank_i = #{j > i: r_i < r_j} + #{j < i: not r_j < r_i}  (pydensecrf's tie-breaking),
    # counted in small integers (4x less memory traffic than float32; ranks are < 3(d+1))
    torch.add(  # the "+ i" of the second count; points off the plane shift every rank
        rounded.sum(0, keepdim=True).to(small),
        torch.arange(d + 1, dtype=small, device=coords.device).unsqueeze(1),
        out=rank,
    )
    for i in range(d):
        below = torch.lt(residual[i : i + 1], residual[i + 1 :]).view(torch.int8).to(small)
        rank[i] += below.sum(0, dtype=small)
        rank[i + 1 :] -= below
    wrap = torch.lt(rank, 0).view(torch.int8).to(small) - torch.gt(rank, d).view(torch.int8).to(
        small
    )
    rank.add_(wrap, alpha=d + 1)
    wrap = wrap.to(rounded.dtype)  # float adds of a float tensor (mixed types are slower)
    rounded += wrap  # rem0 / (d+1), kept to skip an integer division later
    rem0.add_(wrap, alpha=d + 1)  # integers: exact in float32

    v = (elevated - rem0) * down
    # by_rank[r] = v_i with rank_i == r (every entry is written: rank is a permutation)
    by_rank = torch.empty_like(v).scatter_(0, rank.long(), v)
    # vertex p receives +v of rank d-p and -v of rank d-p+1; vertex 0 wraps around
    for p in range(1, d + 1):
        torch.sub(by_rank[d - p], by_rank[d - p + 1], out=bary[p])
    torch.add(by_rank[d], torch.rsub(by_rank[0], 1.0), out=bary[0])
    return rounded[:d], rank, bary


class _CodesOverflow(Exception):
    """The mixed-radix vertex codes would not fit in 62 bits."""


@dataclass(frozen=True)
class _Packing:
    """How vertex keys are packed into integer codes (see ``_vertex_codes``)."""

    strides: list[int]  # of the reduced coordinates a_i (multiples of d+1)
    remainder_stride: int  # R: the remainder r adds r * R to a code (1: the lowest digit)
    dim: int


def _vertex_codes(reduced: torch.Tensor, rank: torch.Tensor, set_index: torch.Tensor | None):
    """Injective integer codes (d+1, N) of the d+1 vertices of each point's simplex.

    Vertex r of a point has key k_i = rem0_i + r - (d+1)[rank_i > d - r] in coordinates
    i < d. All coordinates of a lattice key are congruent to its remainder r modulo d+1,
    so k_i = (d+1) a_i + r and the key is packed as (a_0, ..., a_{d-1}, r) in mixed radix:
    about log2(d+1) fewer bits per coordinate than the raw key, which lets typical images
    sort int32 codes. The a_i ranges are padded by one step either side so that neighbour
    codes (see ``_blur_stencil``) never alias another vertex. The remainder is the lowest
    digit, so vertices are numbered (and the splat visits them) region by region: the d+1
    vertices around a point get neighbouring numbers and its values stay in cache while
    they are splatted, rather than the image being swept once per remainder. The vertex
    order changes nothing else (each vertex's entries keep their order). Returns codes
    and packing.
    """
    d = rank.shape[0] - 1
    # reduced holds float32 integers: bounds first, then the narrowest exact integer type
    low = reduced.amin(1).long() - 2  # vertex a_i is reduced_i or reduced_i - 1; neighbours
    high = reduced.amax(1).long()
    span = high + 1 - low + 1  # one more
    exact_in_float = max(int(low.abs().max()), int(high.abs().max())) < 2**24
    strides = []
    total = 1
    for extent in span.tolist():
        strides.append(total)
        total *= extent
    num_sets = 1 if set_index is None else int(set_index.max().item()) + 1
    num_codes = total * (d + 1) * num_sets
    if num_codes >= 2**_MAX_PACKED_BITS:
        raise _CodesOverflow  # build_lattice falls back to dense row codes
    dtype = torch.int32 if num_codes < 2**31 else torch.long  # int32: half the traffic
    packing = _Packing([stride * (d + 1) for stride in strides], 1, d)  # remainder lowest
    device = rank.device
    stride_t = torch.tensor(packing.strides, dtype=dtype, device=device)[:, None]
    low = low.to(device)[:, None]
    if exact_in_float:  # reduced - low: exact in float32 below 2^24, else in int64
        low = low.to(reduced.dtype)
    set_stride = total * (d + 1)
    codes = torch.empty(d + 1, rank.shape[1], dtype=dtype, device=device)
    for part in _chunks(rank.shape[1], d, device):
        offset = (reduced[:, part] if exact_in_float else reduced[:, part].long()) - low
        base = (offset.to(dtype) * stride_t).sum(0, dtype=dtype)
        if set_index is not None:
            base += (set_index[part] * set_stride).to(dtype)
        # strides of the coordinates by their rank; coordinate d is not part of the key
        suffix = torch.zeros((d + 1, base.shape[0]), dtype=dtype, device=device).scatter_(
            0, rank[:d, part].long(), stride_t.expand(d, base.shape[0])
        )
        # suffix[j] = sum of strides of coordinates with rank >= j, from the top
        for j in range(d - 1, -1, -1):
            suffix[j] += suffix[j + 1]
        out = codes[:, part]
        out[0] = base
        for r in range(1, d + 1):
            torch.sub(base, suffix[d + 1 - r], out=out[r]).add_(r)
    return codes, packing


_CHUNK_ENTRIES = 1 << 17  # (d+1) x points per chunk: a chunk's temporaries stay in cache
_MIN_CHUNK = 1024  # points


def _chunks(n: int, d: int, device: torch.device) -> list[slice]:
    """Point ranges for the per-point stages: on one CPU thread, chunks of about
    ``_CHUNK_ENTRIES`` (point, vertex) entries, so that the many small steps of each stage
    work in cache instead of streaming (d+1, N) arrays through memory once per step
    (0.8-0.9x the stage's time). One chunk on several threads (every step of a chunk is a
    parallel region whose barrier waits for a crowded core: measured slower under load,
    not measurable quiet) and on other devices (kernel launches cost more there)."""
    if device.type != "cpu" or torch.get_num_threads() > 1:
        return [slice(0, n)]
    size = max(_MIN_CHUNK, _CHUNK_ENTRIES // (d + 1))
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _simplex_coordinates_chunked(
    coords: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``_simplex_coordinates`` of (d, N) ``coords``, computed chunk by chunk (``_chunks``)."""
    d, n = coords.shape
    parts = _chunks(n, d, coords.device)
    if len(parts) == 1:
        return _simplex_coordinates(coords)
    rounded, rank, bary = _simplex_outputs(coords)
    for part in parts:
        _simplex_coordinates(coords[:, part], (rounded[:, part], rank[:, part], bary[:, part]))
    return rounded[:d], rank, bary


def _simplex_outputs(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Empty (d+1, N) outputs of ``_simplex_coordinates`` for (d, N) ``coords``: rounded
    and barycentric float32, ranks in the smallest integer type that holds them."""
    d, n = coords.shape
    small = torch.int8 if d < 40 else torch.int16
    rank = torch.empty(d + 1, n, dtype=small, device=coords.device)
    return coords.new_empty(d + 1, n), rank, coords.new_empty(d + 1, n)


@adaptive
def build_lattice(features: torch.Tensor, segments: list[int] | None = None) -> Lattice:
    """Build the permutohedral lattice of ``features`` (N, d), scaled by the bandwidths.

    ``segments`` (start offsets, length B+1) splits the points into independent sets, e.g.
    the images of a batch; points of different sets never interact.
    """
    if features.dim() != 2:
        raise ValueError(f"features: expected a (N, d) tensor, got shape {tuple(features.shape)}")
    n, d = features.shape
    if n == 0 or d == 0:
        raise ValueError(f"features: need at least one point and one dimension, got {(n, d)}")
    tune_allocator()
    coords = transpose_copy(features.detach().float())
    largest = coords.abs().amax().item()  # one pass: NaN and infinity propagate
    if not math.isfinite(largest):
        raise ValueError("features: contain NaN or infinite values")
    if largest > _MAX_FEATURE:
        raise LatticeRangeError(
            f"features: magnitude up to {largest:.3g} exceeds the lattice's range "
            f"({_MAX_FEATURE:.0e}); divide the features by larger bandwidths"
        )
    segments = [0, n] if segments is None else [int(s) for s in segments]
    if segments[0] != 0 or segments[-1] != n or any(b < a for a, b in itertools.pairwise(segments)):
        raise ValueError(f"segments: expected increasing offsets from 0 to {n}, got {segments}")
    device = features.device

    reduced, rank, bary = _simplex_coordinates_chunked(coords)
    del coords
    recheck()  # checkpoints of the thread policy between stages (see deepcrf.threads)
    set_index = None
    if len(segments) > 2:
        lengths = torch.tensor(segments, device=device).diff()
        set_index = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)
    try:
        codes, packing = _vertex_codes(reduced, rank, set_index)
    except _CodesOverflow:  # keys spread too widely for packed codes: rank them instead
        codes, packing = _dense_vertex_codes(reduced, rank, set_index)
    del reduced, rank, set_index  # free temporaries early: peak memory matters at 4 MP

    # entries are remainder-major: entry r*N + n is vertex r of point n
    recheck()
    num_entries = codes.numel()
    index_dtype = torch.int32 if num_entries < 2**31 else torch.long
    order, vertex_codes, starts, vertex_of_entry = _group_entries(codes.view(-1), index_dtype)
    m = vertex_codes.numel()
    del codes
    splat_offsets = starts.to(index_dtype)
    alpha = _alpha(d)
    if isinstance(packing, _Packing):
        stencil = _blur_stencil(vertex_codes, packing, index_dtype)
    else:
        rows = packing.view(-1, packing.shape[-1]).index_select(0, order[starts])
        stencil = _blur_stencil_rows(rows, index_dtype)
        del rows, packing
    recheck()
    order = order.to(index_dtype)  # int32 division and gathers are several times faster
    return Lattice(
        num_points=n,
        num_vertices=m,
        splat_index=torch.remainder(order, n),  # entry r*N + n -> point n
        splat_offsets=splat_offsets,
        splat_weight=bary.view(-1).index_select(0, order),
        slice_index=transpose_copy(vertex_of_entry.view(d + 1, n)),
        slice_weight=transpose_copy(bary, scale=alpha),
        blur_stencils=(stencil,),
        blocks=(0, m),
    )


_RUNS_BELOW = 0.3  # runs of equal codes per entry below which runs are sorted, not entries
_RUNS_SAMPLE = 1 << 13  # entries in each of the 8 windows that estimate the runs


def _few_runs(codes: torch.Tensor) -> bool:
    """Whether consecutive codes repeat enough for ``_group_entries`` to sort runs:
    estimated on 8 windows spread over the entries (a full count costs two passes)."""
    e = codes.numel()
    width = min(_RUNS_SAMPLE, e)
    windows = torch.stack([codes[a : a + width] for a in torch.linspace(0, e - width, 8).long()])
    changes = int(torch.count_nonzero(windows[:, 1:] != windows[:, :-1]))
    return changes < _RUNS_BELOW * windows.numel()


def _group_entries(
    codes: torch.Tensor, index_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entries grouped by vertex: (order, vertex_codes, starts, vertex_of_entry).

    ``order`` lists the entries by code, stably (each vertex's entries in entry order);
    ``vertex_codes`` (M,) are the distinct codes in order, ``starts`` (M,) the first
    position of each vertex in ``order`` and ``vertex_of_entry`` the vertex number of
    every entry. Neighbouring pixels often share a vertex, so consecutive entries repeat
    codes: where runs of equal codes are few enough, the runs are sorted (a stable sort
    of their first entries) and expanded, which gives exactly the stable sort of all
    entries for a fraction of its cost."""
    if not _few_runs(codes):  # runs barely shorter than entries: sort the entries
        sorted_codes, order = _stable_sort(codes)
        vertex_codes, vertex_of_sorted, counts = torch.unique_consecutive(
            sorted_codes, return_inverse=True, return_counts=True
        )
        del sorted_codes
        # order is a permutation: scatter_ (no duplicate handling) is 2x faster than index_put
        vertex_of_entry = torch.empty(codes.numel(), dtype=index_dtype, device=codes.device)
        vertex_of_entry.scatter_(0, order, vertex_of_sorted.to(index_dtype))
        return order, vertex_codes, _exclusive_cumsum(counts), vertex_of_entry
    # runs of equal codes in entry order: codes, lengths, first entries
    run_codes, lengths = torch.unique_consecutive(codes, return_counts=True)
    heads = _exclusive_cumsum(lengths)
    head_codes, head_order = _stable_sort(run_codes)
    del run_codes
    sorted_lengths = lengths.index_select(0, head_order)
    sorted_heads = heads.index_select(0, head_order)
    # the runs in code order, laid end to end: run k starts at first[k] in ``order``
    first = _exclusive_cumsum(sorted_lengths)
    # order[first[k] + t] = sorted_heads[k] + t: a cumulative sum of steps, 1 inside a run
    # and a jump from the end of one run to the head of the next at its first position
    jumps = sorted_heads.clone()
    jumps[1:] -= sorted_heads[:-1] + sorted_lengths[:-1] - 1
    order = _cumsum_of_steps(codes.numel(), first, jumps, 1, index_dtype)
    vertex_codes, vertex_of_run, counts = torch.unique_consecutive(
        head_codes, return_inverse=True, return_counts=True
    )
    starts = first.index_select(0, _exclusive_cumsum(counts))
    # each run's vertex, runs in entry order, repeated along the runs (a cumulative sum of
    # the changes of vertex at the heads)
    vertex_of_head = torch.empty_like(vertex_of_run).scatter_(0, head_order, vertex_of_run)
    changes = vertex_of_head.clone()
    changes[1:] -= vertex_of_head[:-1]
    vertex_of_entry = _cumsum_of_steps(codes.numel(), heads, changes, 0, index_dtype)
    return order, vertex_codes, starts, vertex_of_entry


_RADIX_MIN = 1 << 15  # torch sorts 1-D integer tensors of at least this many by radix
_PAD_FROM = 10_000  # ... and shorter ones by comparison: from here on, padding pays


def _stable_sort(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.sort(codes, stable=True)`` of 1-D integer codes: (sorted codes, order).

    On one CPU thread the codes are sorted by numpy as distinct int64 keys
    ``(code - min) << b | i`` (``i`` the position, ``b`` its bits; ``_sorted_by_numpy``):
    equal codes keep their order, so the result is exactly the stable sort. A VOC photo's
    1M entry codes took 16 ms against torch's 22-25 ms (bilateral builds 0.79-0.94x on 1
    thread, the setting of folder workers); numpy sorts on one thread, so with more threads
    torch's parallel sort (13-19 ms on 2) is kept. Codes too widely spread for such keys,
    and other devices, keep ``torch.sort`` too: on CPU integer tensors of ``_RADIX_MIN``
    elements or more are radix-sorted there and shorter ones compared (~3 ms at 30k
    elements), so codes from ``_PAD_FROM`` up are padded to ``_RADIX_MIN`` with the largest
    value of their type: the padding sorts last (stably, after any real code equal to it)
    and is cut off, the order is the same."""
    n = codes.numel()
    if codes.device.type == "cpu" and n and torch.get_num_threads() == 1:
        found = _sorted_by_numpy(codes)
        if found is not None:
            return found
    if codes.device.type != "cpu" or not _PAD_FROM <= n < _RADIX_MIN:
        return torch.sort(codes, stable=True)
    padded = codes.new_full((_RADIX_MIN,), torch.iinfo(codes.dtype).max)
    padded[:n] = codes
    sorted_codes, order = torch.sort(padded, stable=True)
    return sorted_codes[:n], order[:n]


def _sorted_by_numpy(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The stable sort of 1-D integer CPU ``codes`` as numpy's sort of distinct int64 keys
    (see ``_stable_sort``), or None when code range and positions need over 63 bits."""
    n = codes.numel()
    bits = max(1, (n - 1).bit_length())
    low, high = (int(v) for v in torch.aminmax(codes))
    if high - low >= 1 << (63 - bits):
        return None
    keys = codes.to(torch.int64, copy=True)
    if low:
        keys.sub_(low)
    keys.bitwise_left_shift_(bits).bitwise_or_(torch.arange(n, dtype=torch.int64))
    keys = torch.from_numpy(np.sort(keys.numpy()))
    order = keys.bitwise_and((1 << bits) - 1)
    sorted_codes = keys.bitwise_right_shift_(bits)
    if low:
        sorted_codes.add_(low)
    return sorted_codes.to(codes.dtype), order


def _exclusive_cumsum(counts: torch.Tensor) -> torch.Tensor:
    """Starts of consecutive groups of ``counts`` entries: 0, c0, c0 + c1, ..."""
    return torch.cumsum(counts, 0).sub_(counts)


def _cumsum_of_steps(
    size: int, at: torch.Tensor, steps: torch.Tensor, default: int, dtype: torch.dtype
) -> torch.Tensor:
    """The cumulative sum of ``size`` steps that are ``default`` except ``steps`` at the
    distinct positions ``at`` (a sequence that is piecewise ``default``-linear, e.g. runs
    expanded): one fill, one scatter and one pass of a cumulative sum, in ``dtype``."""
    out = torch.full((size,), default, dtype=dtype, device=steps.device)
    out.index_put_((at,), steps.to(dtype))
    return torch.cumsum(out, 0, dtype=dtype)


def _blur_stencil(
    vertex_codes: torch.Tensor, packing: _Packing, index_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, weight), both (d+1, M, 3): each vertex and its two neighbours per lattice axis.

    Along axis j the neighbours are key - 1 + (d+1) e_j ("down") and key + 1 - (d+1) e_j
    ("up"; for j = d, just key -/+ 1). In packed form (a, r) going up moves r by +1 and
    a_j by -1, except where r wraps around (r = d), which moves every other a_i instead;
    the code offsets for both cases are constants, and the up neighbours are found by
    binary search. The relation is symmetric (u is v's up neighbour exactly when v is u's
    down neighbour), so the down neighbours are the found up pairs read backwards: half
    the searches. A missing neighbour points at the vertex itself with weight 0.
    """
    d = packing.dim
    device = vertex_codes.device
    s_all = sum(packing.strides)
    codes = vertex_codes  # int32 codes (the common case) search faster than int64
    # up offset without the axis's stride: +1 (r -> r+1), or -d + all strides where r wraps
    wraps = (torch.remainder(codes, d + 1) == d).to(codes.dtype)
    lifted = wraps.mul_(s_all - d - 1).add_(codes).add_(1)
    strides = torch.tensor([*packing.strides, 0], dtype=codes.dtype, device=device)
    targets = lifted[None, :] - strides[:, None]  # (d+1, M) up neighbours' codes
    up, found = _find_codes(codes, targets)
    return _stencil_from_up(up, found, index_dtype, device)


_HASH_MULT = 0x9E3779B1  # Knuth's multiplicative hash (2^32 / golden ratio)
_HASH_LOAD = 4  # table slots per key: most lookups end at their first slot
#: ... and twice that up to this many keys (a table of at most 32 MB): about half a
#: photo's neighbour lookups miss (the lattice is sparse), and a miss probes on until a free
#: slot; the largest VOC lattices (50/5, 237k-369k vertices) built in 0.93-0.95x the time on
#: 1 thread (bit-identical)
_SPARSE_HASH_KEYS = 1 << 20
_PROBE_ROUNDS = 4  # rounds of linear probing of a lookup before binary search


def _find_codes(codes: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(position, found) of every target among the sorted, distinct ``codes``: where found,
    ``codes[position] == target``; elsewhere position is any valid index.

    int32 codes go through an open-addressing hash table (linear probing, at most 1/8
    full, 1/4 for over ``_SPARSE_HASH_KEYS`` codes), built and probed with vectorised
    rounds: about half the time of ``torch.searchsorted``'s binary searches (18 dependent
    reads each at 200k vertices), the largest part of a lattice build at DeepLab's
    bandwidths. Wider codes search."""
    m = codes.numel()
    if codes.dtype != torch.int32 or m == 0:
        up = torch.searchsorted(codes, targets.reshape(-1)).clamp_(max=max(m - 1, 0))
        up = up.view_as(targets)
        return up, codes[up] == targets
    device = codes.device
    load = 2 * _HASH_LOAD if m <= _SPARSE_HASH_KEYS else _HASH_LOAD
    bits = max(4, (load * m - 1).bit_length())
    shift, mask = 32 - bits, (1 << bits) - 1
    table = torch.full((1 << bits,), -1, dtype=torch.int32, device=device)
    # insert: every key tries its slot, one writer per slot wins, the others move one slot
    # on (past a taken slot only, so no key is ever separated from its home by a free slot)
    ids = torch.arange(m, dtype=torch.int32, device=device)
    slot = _hash_slots(codes, shift)
    table.index_put_((slot,), ids)
    while True:
        left = torch.nonzero(table.index_select(0, slot) != ids).view(-1)
        if not left.numel():
            break
        ids, slot = ids.index_select(0, left), slot.index_select(0, left).add_(1).bitwise_and_(mask)
        free = torch.nonzero(table.index_select(0, slot) < 0).view(-1)
        table.index_put_((slot.index_select(0, free),), ids.index_select(0, free))
    # look up, a chunk of targets at a time (bounded temporaries on large images)
    flat = targets.reshape(-1)
    position = torch.empty(flat.shape, dtype=torch.int32, device=device)
    chunk = max(m, 1 << 21)
    for start in range(0, flat.numel(), chunk):
        stop = min(start + chunk, flat.numel())
        position[start:stop] = _probe(table, codes, flat[start:stop], shift, mask)
    found = position >= 0
    return position.clamp_(min=0).view_as(targets), found.view_as(targets)


def _probe(
    table: torch.Tensor, codes: torch.Tensor, query: torch.Tensor, shift: int, mask: int
) -> torch.Tensor:
    """Positions in ``codes`` of the ``query`` codes by linear probing of ``table`` (see
    ``_find_codes``): found at its probe's key, absent (-1) at a free slot. After
    ``_PROBE_ROUNDS`` rounds the few lookups still probing are binary searches: every
    round costs a dozen operations however few lookups are left (a photo's long probe
    runs had taken ~60 rounds per chunk of targets)."""
    slot = _hash_slots(query, shift)
    key = table.index_select(0, slot)
    occupied = key >= 0
    hit = codes.index_select(0, key.clamp(min=0)) == query
    hit &= occupied
    # key where hit, else -1, by arithmetic: torch.where and masked_fill_ are several
    # times slower than a few elementwise ops on CPU
    position = (key + 1).mul_(hit).sub_(1)
    pending = torch.nonzero(occupied ^ hit).view(-1)  # occupied, other key: probe on
    slot = slot.index_select(0, pending)
    for _ in range(_PROBE_ROUNDS):
        if not pending.numel():
            return position
        slot.add_(1).bitwise_and_(mask)
        key = table.index_select(0, slot)
        hit = (key >= 0) & (codes.index_select(0, key.clamp(min=0)) == query[pending])
        position.index_put_((pending[hit],), key[hit])
        left = torch.nonzero((key >= 0) & ~hit).view(-1)
        pending, slot = pending.index_select(0, left), slot.index_select(0, left)
    if pending.numel():  # the few still probing: binary searches
        rest = query.index_select(0, pending)
        at = torch.searchsorted(codes, rest).clamp_(max=codes.numel() - 1)
        hit = codes.index_select(0, at) == rest
        position.index_put_((pending[hit],), at[hit].to(position.dtype))
    return position


def _hash_slots(keys: torch.Tensor, shift: int) -> torch.Tensor:
    """Table slots (int64) of int32 ``keys``: the top bits of k · ``_HASH_MULT`` mod 2^32
    for k = key xor (key >> 11) (no overflow: |k| < 2^31 and the multiplier < 2^32).

    The xor folds a code's high digits into its low bits first: vertex codes are a
    mixed-radix lattice, and the plain multiplicative hash sent some photos' codes to few
    slots (2007_000129 at IRN's 50/5: 67% distinct home slots, against 89% for random
    keys, and long probe runs: the lookups took 134 ms, 60 ms with the xor)."""
    mixed = torch.bitwise_xor(keys, keys >> 11)
    return (mixed.long() * _HASH_MULT).bitwise_and_(0xFFFFFFFF).bitwise_right_shift_(shift)


def _stencil_from_up(
    up: torch.Tensor, found: torch.Tensor, index_dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (d+1, M, 3) stencil from each vertex's up neighbour per axis (``up``, valid
    where ``found``): [itself, down, up], the down neighbours read backwards. Selections
    are arithmetic on 0/1 integers (torch.where, and products with booleans, take slower
    paths on CPU)."""
    axes, m = up.shape
    size = axes * m
    own = torch.arange(m, device=device, dtype=index_dtype)
    is_found = found.view(torch.int8).to(index_dtype)
    half = is_found.to(torch.float32).mul_(0.5)  # the neighbour's weight: 1/2 or 0
    index = torch.empty(axes, m, 3, dtype=index_dtype, device=device)
    weight = torch.empty(axes, m, 3, dtype=torch.float32, device=device)
    index[:, :, 0] = own
    weight[:, :, 0] = 1.0
    step = torch.sub(up.to(index_dtype), own).mul_(is_found)  # up - own where found, else 0
    index[:, :, 2] = step + own
    weight[:, :, 2] = half
    # down neighbours: vertex u = up[j, v] has v below it along axis j: a scatter to
    # j*M + u, or to the spare last slot where nothing was found
    rows = torch.arange(-size, 0, m, device=device, dtype=index_dtype)[:, None]
    slots = step.add_(own).add_(rows).mul_(is_found).add_(size).view(-1).long()
    down = own.repeat(axes + 1)[: size + 1]  # itself where nothing is below
    down.scatter_(0, slots, own.expand(axes, m).reshape(-1))
    down_weight = torch.zeros(size + 1, dtype=torch.float32, device=device)
    down_weight.scatter_(0, slots, half.view(-1))
    index[:, :, 1] = down[:size].view(axes, m)
    weight[:, :, 1] = down_weight[:size].view(axes, m)
    return index, weight


def _dense_vertex_codes(
    reduced: torch.Tensor, rank: torch.Tensor, set_index: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertex codes (d+1, N) for keys too widely spread for ``_vertex_codes``: the keys as
    integer rows (point set, a_{d-1}, ..., a_0, r), numbered by their rank among all rows
    (``_dense_row_codes``), so equal keys get equal codes and the code order is the order
    the packed codes would have. Returns the codes and the rows (d+1, N, d+2), which the
    blur stencil needs to find neighbours (``_blur_stencil_rows``). Slower than packing
    (a sort per key coordinate) but it indexes any range of keys, as pydensecrf's hash
    table does."""
    d, n = reduced.shape
    rows = torch.empty(d + 1, n, d + 2, dtype=torch.long, device=reduced.device)
    rows[:, :, 0] = 0 if set_index is None else set_index
    for r in range(d + 1):
        rows[r, :, d + 1] = r
        # vertex r: a_i = reduced_i - [rank_i > d - r] (see ``_vertex_codes``)
        rows[r, :, 1 : d + 1] = (reduced.long() - (rank[:d] > d - r).long()).flip(0).t()
    codes = _dense_row_codes(rows.view(-1, d + 2)).view(d + 1, n)
    return codes, rows


def _dense_row_codes(rows: torch.Tensor) -> torch.Tensor:
    """int64 codes (R,) of integer rows (R, k): equal exactly for equal rows, ordered like
    the rows lexicographically (column 0 most significant), all below R. One column at a
    time: the code so far times the column's span plus the column, ranked among the
    values present (``torch.unique``), which keeps every intermediate below R * span."""
    codes = torch.zeros(rows.shape[0], dtype=torch.long, device=rows.device)
    for column in rows.t():
        low, high = (int(v) for v in torch.aminmax(column))
        combined = codes * (high - low + 1) + (column - low)
        codes = torch.unique(combined, sorted=True, return_inverse=True)[1]
    return codes


def _blur_stencil_rows(
    vertex_rows: torch.Tensor, index_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``_blur_stencil`` for vertices given as key rows (M, d+2) (``_dense_vertex_codes``),
    sorted as their codes: the up neighbour along axis j moves r to r+1 and a_j down by
    one, or where r = d, r to 0 and every other a_i up by one (axis d: only r, or all
    a_i); neighbours are found by ranking the vertex and neighbour rows together."""
    m, width = vertex_rows.shape
    d = width - 2
    device = vertex_rows.device
    wraps = vertex_rows[:, d + 1] == d
    targets = vertex_rows.unsqueeze(0).repeat(d + 1, 1, 1)  # (axis, M, d+2)
    targets[:, :, d + 1] = torch.where(wraps, 0, vertex_rows[:, d + 1] + 1)
    targets[:, :, 1 : d + 1] += wraps.long()[None, :, None]
    for axis in range(d):  # column of a_axis: 1 + (d-1-axis)
        targets[axis, :, d - axis] -= 1
    codes = _dense_row_codes(torch.cat([vertex_rows, targets.view(-1, width)]))
    own_codes, target_codes = codes[:m], codes[m:].view(d + 1, m)
    up = torch.searchsorted(own_codes, target_codes.reshape(-1)).clamp_(max=m - 1)
    up = up.view(d + 1, m)
    found = own_codes[up] == target_codes
    return _stencil_from_up(up, found, index_dtype, device)
