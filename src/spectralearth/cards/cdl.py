"""Crop-type segmentation with USDA Cropland Data Layer labels: EnMAP-, DESIS- and EO-1-CDL.

Facts (torchgeo-style dataset card):

* **Task:** per-pixel crop-type classification (semantic segmentation) over the USA.
* **Images:** SpectralEarth patches of three sensors: ``enmap_cdl`` EnMAP (202 bands),
  ``desis_cdl`` DESIS (235 bands), ``eo1_cdl`` EO-1 Hyperion (198 bands).
* **Labels:** USDA NASS Cropland Data Layer (CDL) codes, reprojected (nearest) onto each patch
  grid. Only the codes listed below are kept, in that order, as classes ``0..K-1``; every
  other code (including 0 = background) is ignored.
* **Layout:** ``<dataset>/{<sensor>,cdl}/<location:07d>/<scene:05d>.tif`` + ``splits/`` (the
  official lists are in ``spectralearth_reference/splits/<dataset>/``).

Citations: Braham et al., "SpectralEarth: Training Hyperspectral Foundation Models at Scale",
IEEE JSTARS 2025 (arXiv:2408.08447); USDA National Agricultural Statistics Service, Cropland
Data Layer (https://www.nass.usda.gov/Research_and_Science/Cropland/).
"""

from __future__ import annotations

from spectralearth.cards.card import SEGMENTATION, DatasetCard

CITATION = "Braham et al., SpectralEarth, IEEE JSTARS 2025; USDA NASS Cropland Data Layer (CDL)"

# CDL legend names of the codes used by the three datasets.
CDL_NAMES = {
    1: "corn",
    2: "cotton",
    3: "rice",
    4: "sorghum",
    5: "soybeans",
    6: "sunflower",
    41: "sugarbeets",
    42: "dry beans",
    43: "potatoes",
    45: "sugarcane",
    49: "onions",
    54: "tomatoes",
    56: "hops",
    68: "apples",
    69: "grapes",
    72: "citrus",
    75: "almonds",
    76: "walnuts",
    204: "pistachios",
    210: "prunes",
}


def _cdl(name: str, sensor: str, sensor_dir: str, codes: tuple[int, ...]) -> DatasetCard:
    return DatasetCard(
        name=name,
        task=SEGMENTATION,
        task_type="crop-type seg.",
        sensor=sensor,
        sensor_dir=sensor_dir,
        label_dir="cdl",
        label_source="CDL",
        codes=codes,
        class_names=tuple(CDL_NAMES[c] for c in codes),
        citation=CITATION,
    )


ENMAP_CDL = _cdl(
    "enmap_cdl", "EnMAP", "enmap", (1, 2, 3, 4, 5, 6, 45, 54, 69, 72, 75, 76, 204, 210)
)
DESIS_CDL = _cdl(
    "desis_cdl", "DESIS", "desis", (1, 2, 3, 5, 42, 43, 49, 54, 56, 68, 69, 75, 76, 204)
)
EO1_CDL = _cdl("eo1_cdl", "Hyperion", "eo1", (1, 2, 3, 4, 5, 6, 41, 42, 43, 54, 69, 75, 76, 204))
