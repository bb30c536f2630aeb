"""Land-cover segmentation with the US National Land Cover Database: EnMAP-NLCD.

Facts (torchgeo-style dataset card):

* **Task:** per-pixel land-cover classification (semantic segmentation) over the USA.
* **Images:** SpectralEarth EnMAP patches, 202 bands.
* **Labels:** NLCD codes reprojected (nearest) onto each patch grid; the 15 codes below are
  kept in that order as classes ``0..14``, every other code is ignored.
* **Layout:** ``enmap_nlcd/{enmap,nlcd}/<location:07d>/<scene:05d>.tif`` + ``splits/``.

Citations: Braham et al., "SpectralEarth", IEEE JSTARS 2025; U.S. Geological Survey, National
Land Cover Database (https://www.mrlc.gov/).
"""

from __future__ import annotations

from spectralearth.cards.card import SEGMENTATION, DatasetCard

NLCD_NAMES = {
    11: "open water",
    21: "developed, open space",
    22: "developed, low intensity",
    23: "developed, medium intensity",
    24: "developed, high intensity",
    31: "barren land",
    41: "deciduous forest",
    42: "evergreen forest",
    43: "mixed forest",
    52: "shrub/scrub",
    71: "grassland/herbaceous",
    81: "pasture/hay",
    82: "cultivated crops",
    90: "woody wetlands",
    95: "emergent herbaceous wetlands",
}

ENMAP_NLCD = DatasetCard(
    name="enmap_nlcd",
    task=SEGMENTATION,
    task_type="land-cover seg.",
    sensor="EnMAP",
    sensor_dir="enmap",
    label_dir="nlcd",
    label_source="NLCD",
    codes=tuple(NLCD_NAMES),
    class_names=tuple(NLCD_NAMES.values()),
    citation="Braham et al., SpectralEarth, IEEE JSTARS 2025; USGS National Land Cover Database",
)
