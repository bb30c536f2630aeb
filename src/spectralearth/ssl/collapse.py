"""Representation-collapse monitoring: is the encoder still telling its inputs apart?

Two measures of a batch of embeddings ``z`` [B, D] (the encoder's pooled features, before
any projection head), logged every training step as ``feature_std`` and ``effective_rank``:

- ``feature_std``: the mean over dimensions of the per-dimension std of the L2-normalised
  embeddings (lightly's ``std_of_l2_normalized``; SimSiam, Chen & He 2021, and the
  SpectralEarth reference code log it as ``train_ssl_std``). 0 when every input maps to
  the same vector; about ``1/sqrt(D)`` for embeddings spread evenly over the sphere.
- ``effective_rank``: RankMe (Garrido et al., ICML 2023), ``exp`` of the entropy of the
  normalised singular values of ``z``: between 1 (one direction) and ``min(B, D)``.

A run is *collapsed* when its final ``feature_std`` is under ``fraction / sqrt(D)``
(``collapse_std_fraction`` of the profile, 0.1 by default: well under what a randomly
initialised Spec-ResNet or Spec-ViT gives, 0.3-0.8 / sqrt(D) on our patches). Then
pretraining warns with :class:`RepresentationCollapseWarning` and run.json says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

LAST_STEPS = 10  # the summary averages the measures of the last steps (one batch is noisy)


class RepresentationCollapseWarning(UserWarning):
    """The encoder's embeddings collapsed: pretraining learnt a (near) constant map."""


@torch.no_grad()
def feature_std(z: torch.Tensor) -> float:
    """Mean per-dimension std of the L2-normalised rows of ``z`` [B, D]."""
    from lightly.utils.debug import std_of_l2_normalized

    return float(std_of_l2_normalized(_as_matrix(z)))


@torch.no_grad()
def effective_rank(z: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe effective rank of ``z`` [B, D]: ``exp(-sum p log p)``, p the singular values
    over their sum. 0 for an all-zero batch."""
    s = torch.linalg.svdvals(_as_matrix(z))
    total = float(s.sum())
    if total <= 0.0 or not math.isfinite(total):
        return 0.0
    p = s / total + eps
    return float(torch.exp(-(p * p.log()).sum()))


def collapse_threshold(dim: int, fraction: float = 0.1) -> float:
    """The ``feature_std`` under which embeddings of dimension ``dim`` count as collapsed."""
    return float(fraction) / math.sqrt(max(1, int(dim)))


def _as_matrix(z: torch.Tensor) -> torch.Tensor:
    z = z.detach().float()
    if z.ndim != 2:
        z = z.flatten(start_dim=1)
    return z


@dataclass(frozen=True)
class CollapseSummary:
    """run.json's ``collapse``: the mean of the last steps' measures and the verdict."""

    feature_std: float | None  # None: nothing was measured (no training step ran)
    effective_rank: float | None
    collapsed: bool
    threshold: float | None  # feature_std under this = collapsed (fraction / sqrt(dim))
    dim: int
    steps_averaged: int

    def as_json(self) -> dict:
        return asdict(self)

    def message(self) -> str:
        return (
            f"representation collapse: the mean per-dimension std of the L2-normalised "
            f"{self.dim}-d embeddings is {self.feature_std:.2e}, under {self.threshold:.2e} "
            f"(healthy embeddings give about 1/sqrt({self.dim}) = {1 / math.sqrt(self.dim):.2e}); "
            f"effective rank {self.effective_rank:.2f}. The encoder maps its inputs to nearly "
            "the same vector: look at the learning rate, the augmentations and the batch size."
        )


def summarise(
    stds: Sequence[float], ranks: Sequence[float], dim: int, fraction: float = 0.1
) -> CollapseSummary:
    """The summary of a run from its per-step measures (the last :data:`LAST_STEPS`)."""
    threshold = collapse_threshold(dim, fraction)
    last_std, last_rank = list(stds)[-LAST_STEPS:], list(ranks)[-LAST_STEPS:]
    if not last_std:
        return CollapseSummary(None, None, False, threshold, int(dim), 0)
    std = sum(last_std) / len(last_std)
    rank = sum(last_rank) / len(last_rank) if last_rank else None
    return CollapseSummary(
        feature_std=std,
        effective_rank=rank,
        collapsed=bool(std < threshold),
        threshold=threshold,
        dim=int(dim),
        steps_averaged=len(last_std),
    )


def warn_if_collapsed(summary: CollapseSummary) -> None:
    if summary.collapsed:
        warnings.warn(summary.message(), RepresentationCollapseWarning, stacklevel=3)
