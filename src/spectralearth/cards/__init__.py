"""Downstream dataset cards as plain data (torchgeo-style facts, one module per family).

No torch here: the CLI, the Dagster definitions and the docs read the cards without
importing a deep-learning stack. The loaders live in :mod:`spectralearth.downstream.datasets`.
"""

from __future__ import annotations

from spectralearth.cards import (
    bdforet,
    bnetd,
    cdl,
    corine,
    eurocrops,
    hyperview,
    nlcd,
    potsdam,
    treemap,
)
from spectralearth.cards.card import (
    IGNORE_INDEX,
    MULTILABEL,
    REGRESSION,
    SEGMENTATION,
    SENSOR_BANDS,
    TASKS,
    DatasetCard,
    encode_codes,
)

# The paper's nine downstream datasets, in the paper's order.
PAPER_CARDS: tuple[DatasetCard, ...] = (
    cdl.ENMAP_CDL,
    nlcd.ENMAP_NLCD,
    corine.ENMAP_CORINE,
    eurocrops.ENMAP_EUROCROPS,
    bdforet.ENMAP_BDFORET,
    treemap.ENMAP_TREEMAP,
    bnetd.ENMAP_BNETD,
    cdl.DESIS_CDL,
    cdl.EO1_CDL,
)
PAPER_DATASETS: tuple[str, ...] = tuple(c.name for c in PAPER_CARDS)
# Besides them: the real Potsdam tiles and the reference code's tenth task (HYPERVIEW).
CARDS: dict[str, DatasetCard] = {
    c.name: c for c in (*PAPER_CARDS, potsdam.ENMAP_POTSDAM, hyperview.HYPERVIEW)
}


def get_card(name: str) -> DatasetCard:
    if name not in CARDS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(CARDS)}")
    return CARDS[name]


__all__ = [
    "CARDS",
    "IGNORE_INDEX",
    "MULTILABEL",
    "PAPER_CARDS",
    "PAPER_DATASETS",
    "REGRESSION",
    "SEGMENTATION",
    "SENSOR_BANDS",
    "TASKS",
    "DatasetCard",
    "encode_codes",
    "get_card",
]
