"""Self-supervised pretraining: method registry (MoCo-v2, DINO, MAE) and the ``pretrain`` stage.

Modules: ``moco``, ``dino``, ``mae`` (the methods, each a LightningModule on lightly's
heads and losses, defaults from the SpectralEarth reference's pretraining configs),
``base`` (the shared training step, LR schedules, the AdamW weight-decay split),
``collapse`` (representation-collapse measures and warning), ``distributed`` (rank helpers,
importable without torch), ``train`` (the stage: :func:`pretrain` -> :class:`PretrainRun`).

Names are loaded on first use, so ``spectralearth.ssl.distributed`` costs no torch import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .registry import METHODS, get_method, list_methods
    from .train import PretrainRun, pretrain

_EXPORTS = {
    "METHODS": "registry",
    "get_method": "registry",
    "list_methods": "registry",
    "PretrainRun": "train",
    "pretrain": "train",
}

__all__ = ["METHODS", "PretrainRun", "get_method", "list_methods", "pretrain"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
