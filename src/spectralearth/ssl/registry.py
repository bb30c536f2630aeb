"""Self-supervised method name -> LightningModule class: "moco", "dino", "mae".

A method class takes the encoder first, exposes the trained encoder as ``.encoder`` and
its per-step losses as ``.loss_history``, says with ``two_views`` whether it wants
two-date pairs from ``ShardPatches``, and builds itself with
``from_settings(encoder, settings: PretrainSettings)``.
"""

from __future__ import annotations

from .. import names
from .dino import DINO
from .mae import MAE
from .moco import MoCo

METHODS: dict[str, type] = {names.MOCO: MoCo, names.DINO: DINO, names.MAE: MAE}


def list_methods() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> type:
    if name not in METHODS:
        raise ValueError(
            f"unknown pretraining method {name!r}; known methods: {', '.join(list_methods())}"
        )
    return METHODS[name]
