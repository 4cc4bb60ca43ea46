"""ContextualCRF: FeatMap-Nets, a Unary-Net and one Pairwise-Net per spatial relation (§3-§6).

One CRF node per feature-map position; each relation adds its range-box edges. Training
minimises the piecewise objective (no inference, §7.1); prediction runs mean field on the
coarse grid, up-samples the marginals bilinearly to the image and optionally refines them
with the dense CRF (§6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepcrf.cache import ByteCache

from .features import pairwise_scores
from .graph import RELATIONS, batch_edges, range_box_edges
from .inference import mean_field
from .labels import downsample_labels
from .piecewise import piecewise_nll


@dataclass
class Potentials:
    """Potentials of a batch as one disjoint graph of B*h*w nodes (image b's nodes first)."""

    unary: torch.Tensor | list[torch.Tensor]  # (B*h*w, K) scores z_p (a list: an ensemble)
    edges: list[torch.Tensor]  # per relation, (B*E, 2)
    pairwise: list[torch.Tensor]  # per relation, (B*E, K, K) scores z_pq
    shape: tuple[int, int, int]  # (B, h, w)


class ContextualCRF(nn.Module):
    """The contextual deep CRF of Lin et al. built from given networks.

    Args:
        featmap: image (B, 3, H, W) -> features (B, C, h, w). One module shared by every
            potential, or a sequence with one module per potential type: the unary nets first,
            then one per relation (the paper's setting; all must give the same h x w).
        unary_net: features (B, C, h, w) -> scores (B, K, h, w); a sequence of them is an
            ensemble of unary potentials (each its own piecewise likelihood, scores summed
            in inference; the paper's Table 2).
        pairwise_nets: one per relation, edge features (E, 2C) -> (E, K*K), index y_p*K + y_q.
        num_classes: K.
        relations: names from ``RELATIONS``; ``()`` gives the unary-only model.
        box, grid: range-box geometry (see ``range_box_edges``).
        iterations: mean-field iterations for inference (the paper uses 3).
        pairwise_weight: multiplies the pairwise scores in mean field (1: the paper). The
            piecewise-trained tables each carry the pair's joint likelihood, so a node hears
            its ~48 neighbours' opinions; a weight below 1 tempers that when the Pairwise-Nets
            are weak (short trainings). Training is unaffected.
        chunk_size: edges per Pairwise-Net call.
        ignore_index: void label.
        refine_net: the optional refinement network of the paper's second stage (§6, Fig. 12):
            ``refine_net(pools, scores)`` maps the pooling outputs of the (first) unary
            FeatMap-Net's trunk on the image (its ``pool_features``) and the log of the coarse
            mean-field marginals (B, K, h, w) to finer scores (B, K, h', w'). When present,
            ``forward(images)`` and ``predict`` give its softmax, and ``refine_loss`` trains it.
    """

    def __init__(
        self,
        featmap: nn.Module | Sequence[nn.Module],
        unary_net: nn.Module | Sequence[nn.Module],
        pairwise_nets: Sequence[nn.Module],
        num_classes: int,
        relations: Sequence[str] = RELATIONS,
        box: float = 0.4,
        grid: int = 5,
        iterations: int = 3,
        pairwise_weight: float = 1.0,
        chunk_size: int = 8192,
        ignore_index: int = 255,
        refine_net: nn.Module | None = None,
    ) -> None:
        super().__init__()
        relations = tuple(relations)
        if any(r not in RELATIONS for r in relations) or len(set(relations)) != len(relations):
            raise ValueError(f"relations must be distinct names from {RELATIONS}, got {relations}")
        pairwise_nets = list(pairwise_nets)
        if len(pairwise_nets) != len(relations):
            raise ValueError(
                f"pairwise_nets must hold one net per relation ({len(relations)}), "
                f"got {len(pairwise_nets)}"
            )
        unary_nets = [unary_net] if isinstance(unary_net, nn.Module) else list(unary_net)
        if not unary_nets:
            raise ValueError("unary_net must be a module or a non-empty sequence of modules")
        types = len(unary_nets) + len(relations)
        featmaps = [featmap] if isinstance(featmap, nn.Module) else list(featmap)
        if len(featmaps) == 1:
            featmaps = featmaps * types
        if len(featmaps) != types:
            raise ValueError(
                f"featmap must be one module or len(unary nets) + len(relations) = {types} "
                f"modules (unary first), got {len(featmaps)}"
            )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        distinct: list[nn.Module] = []
        for m in featmaps:
            if not any(m is d for d in distinct):
                distinct.append(m)
        self.featmaps = nn.ModuleList(distinct)
        self.featmap_index = [next(i for i, d in enumerate(distinct) if d is m) for m in featmaps]
        self.unary_nets = nn.ModuleList(unary_nets)
        self.output_stride = getattr(featmaps[0], "output_stride", None)
        self.pairwise_nets = nn.ModuleList(pairwise_nets)
        self.num_classes = num_classes
        self.relations = relations
        self.box, self.grid = box, grid
        self.iterations = iterations
        if not isinstance(pairwise_weight, (int, float)) or not pairwise_weight >= 0:
            raise ValueError(f"pairwise_weight must be a number >= 0, got {pairwise_weight!r}")
        self.pairwise_weight = float(pairwise_weight)
        self.chunk_size = chunk_size
        self.ignore_index = ignore_index
        if refine_net is not None and not callable(
            getattr(self.featmaps[self.featmap_index[0]], "pool_features", None)
        ):
            raise ValueError(
                "refine_net needs a unary FeatMap-Net with pool_features(image) (the trunk's "
                "pooling outputs, deepcrf.models FeatMapNet)"
            )
        self.refine_net = refine_net
        self._graphs: ByteCache[list[torch.Tensor]] = ByteCache("contextual graphs")

    outputs_probabilities = True  # forward(images) gives marginals, not scores

    @property
    def unary_net(self) -> nn.Module:
        """The (first) Unary-Net."""
        return self.unary_nets[0]

    # -- parameter groups (the asynchronous update steps them separately) ------------------
    def featmap_parameters(self) -> list[nn.Parameter]:
        return list(self.featmaps.parameters())

    def unary_parameters(self) -> list[nn.Parameter]:
        return list(self.unary_nets.parameters())

    def pairwise_parameters(self) -> list[nn.Parameter]:
        return list(self.pairwise_nets.parameters())

    # -- building blocks -----------------------------------------------------------------
    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps (B, C, h, w), one per potential type (unary nets, then relations)."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError("images must be a (B, 3, H, W) tensor")
        maps = [net(images) for net in self.featmaps]
        out = [maps[i] for i in self.featmap_index]
        if len({tuple(m.shape[-2:]) for m in out}) != 1:
            raise ValueError("all FeatMap-Nets must give feature maps of one spatial size")
        return out

    def graph(self, h: int, w: int, batch: int, device: torch.device) -> list[torch.Tensor]:
        """Batched range-box edges (B*E, 2) per relation, cached by map size."""
        key = (h, w, batch, str(device))
        return self._graphs.get_or_create(
            key,
            lambda: [
                batch_edges(range_box_edges(h, w, r, self.box, self.grid), h * w, batch).to(device)
                for r in self.relations
            ],
        )

    def unary_scores(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Node scores (B*h*w, K) of each Unary-Net from its feature map."""
        b, _, h, w = features[0].shape
        out = []
        for f, net in zip(features, self.unary_nets, strict=False):
            unary = net(f)
            if unary.shape != (b, self.num_classes, h, w):
                raise ValueError(
                    f"unary_net must return (B, K, h, w) = {(b, self.num_classes, h, w)}, "
                    f"got {tuple(unary.shape)}"
                )
            out.append(node_features(unary))
        return out

    def potentials(self, features: Sequence[torch.Tensor]) -> Potentials:
        """Unary and pairwise scores of a batch from its feature maps."""
        b, _, h, w = features[0].shape
        unaries = self.unary_scores(features)
        n = len(self.unary_nets)
        edges = self.graph(h, w, b, unaries[0].device)
        tables = [
            pairwise_scores(node_features(f), e, net, self.num_classes, self.chunk_size)
            for f, e, net in zip(features[n:], edges, self.pairwise_nets, strict=True)
        ]
        unary = unaries[0] if n == 1 else unaries
        return Potentials(unary, list(edges), tables, (b, h, w))

    def node_labels(self, labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Labels (B, H, W) at node resolution (majority vote, see ``downsample_labels``)."""
        if not isinstance(labels, torch.Tensor) or labels.dim() != 3:
            raise ValueError("labels must be a (B, H, W) tensor of class indices")
        if tuple(labels.shape[-2:]) != tuple(size):
            labels = downsample_labels(labels, size, self.num_classes, self.ignore_index)
        return labels.reshape(-1).long()

    # -- the three uses ------------------------------------------------------------------
    def loss(
        self, images: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """Piecewise negative log-likelihood (eq. 14): unary term + one term per relation."""
        if not isinstance(labels, torch.Tensor) or labels.dim() != 3:
            raise ValueError("labels must be a (B, H, W) tensor of class indices")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must hold {images.shape[0]} maps, got {labels.shape[0]}")
        pot = self.potentials(self.feature_maps(images))
        _, h, w = pot.shape
        return piecewise_nll(
            pot.unary,
            pot.edges,
            pot.pairwise,
            self.node_labels(labels, (h, w)),
            self.ignore_index,
            reduction,
        )

    def marginals(self, images: torch.Tensor, iterations: int | None = None) -> torch.Tensor:
        """Coarse mean-field marginals (B, K, h, w)."""
        pot = self.potentials(self.feature_maps(images))
        its = self.iterations if iterations is None else iterations
        tables = pot.pairwise
        if self.pairwise_weight != 1.0:
            tables = [t * self.pairwise_weight for t in tables]
        q = mean_field(pot.unary, pot.edges, tables, its)
        b, h, w = pot.shape
        return q.view(b, h, w, -1).permute(0, 3, 1, 2)

    def refined_scores(self, images: torch.Tensor) -> torch.Tensor:
        """Scores (B, K, h', w') of the refinement network from the coarse marginals and the
        trunk's pooling outputs, both computed without gradient (the second stage trains the
        refinement network only)."""
        if self.refine_net is None:
            raise ValueError("refined_scores: the model has no refine_net")
        with torch.no_grad():
            coarse = self.marginals(images).clamp_min(1e-8).log()
            pools = self.featmaps[self.featmap_index[0]].pool_features(images)
        return self.refine_net(pools, coarse)

    def refine_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pixel-wise cross-entropy of the refined scores, up-sampled bilinearly to the labels
        (B, H, W) (void ``ignore_index`` pixels skipped): the second stage's objective."""
        if not isinstance(labels, torch.Tensor) or labels.dim() != 3:
            raise ValueError("labels must be a (B, H, W) tensor of class indices")
        scores = self.refined_scores(images)
        scores = F.interpolate(scores, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        valid = labels != self.ignore_index
        if not bool(valid.any()):
            return scores.sum() * 0.0
        return F.cross_entropy(scores, labels.long(), ignore_index=self.ignore_index)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The piecewise loss when ``labels`` are given (training), else the marginals (the
        refinement network's probabilities when the model has one)."""
        if labels is not None:
            return self.loss(images, labels)
        if self.refine_net is not None:
            return self.refined_scores(images).softmax(1)
        return self.marginals(images)

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        rgb: torch.Tensor | None = None,
        refine: bool = False,
        **refine_options: Any,
    ) -> torch.Tensor:
        """§6: coarse marginals (or the refinement network's output), bilinear up-sampling to
        the image, optional dense-CRF refinement.

        ``rgb`` is the raw image (B, 3, H, W), uint8 or float in 0..255 (never the normalised
        network input); it is required for ``refine`` and sets the output size when given.
        Returns class probabilities (B, K, H, W); ``.argmax(1)`` gives the labels.
        """
        probs = self.forward(images)
        size = tuple((rgb if rgb is not None else images).shape[-2:])
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        probs = probs / probs.sum(dim=1, keepdim=True)
        if not refine:
            return probs
        if rgb is None:
            raise ValueError("rgb (the raw uint8 image) is required when refine=True")
        from deepcrf.dense import refine as dense_refine

        return dense_refine(probs, rgb, **refine_options)


def node_features(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B*h*w, C), rows in the batched row-major node order."""
    return feature_map.permute(0, 2, 3, 1).reshape(-1, feature_map.shape[1])
