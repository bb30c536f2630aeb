"""Tree-species (forest type) segmentation with USDA Forest Service TreeMap: EnMAP-TreeMap.

Facts (torchgeo-style dataset card):

* **Task:** per-pixel forest-type classification over the conterminous USA.
* **Images:** SpectralEarth EnMAP patches, 202 bands.
* **Labels:** TreeMap raster values (FIA forest-type codes) reprojected (nearest) onto each
  patch grid; the 24 codes below are kept in that order, every other code is ignored.
* **Codes:** as the SpectralEarth reference code (GitHub ``AABNassim/spectral_earth``,
  ``configs/data/enmap_treemap.yaml``: background 0 then these 24, same order) has them.
  That code gives no class names.
* **Class names** are the FIA forest-type names of those codes, as the forest-type class
  table of TreeMap 2016 lists them (the Earth Engine catalogue entry
  ``USFS/GTAC/TreeMap/v2016``, GitHub ``google/earthengine-catalog``,
  ``catalog/USFS/USFS_GTAC_TreeMap_v2016.jsonnet``; FIA Database User Guide forest-type
  codes). All 24 codes are in that table.
* **Layout:** ``enmap_treemap/{enmap,treemap}/<location:07d>/<scene:05d>.tif`` + ``splits/``.

Citations: Braham et al., "SpectralEarth", IEEE JSTARS 2025; Riley et al., TreeMap 2016,
USDA Forest Service Research Data Archive.
"""

from __future__ import annotations

from spectralearth.cards.card import SEGMENTATION, DatasetCard

CODES = (
    184, 185, 221, 924, 105, 503, 520, 706, 801, 201, 264, 266,
    281, 301, 901, 406, 923, 142, 161, 602, 607, 608, 267, 371,
)  # fmt: skip

# FIA forest-type names of the codes (TreeMap 2016 forest-type class table).
FIA_NAMES = {
    105: "Eastern hemlock",
    142: "Slash pine",
    161: "Loblolly pine",
    184: "Juniper woodland",
    185: "Pinyon / juniper woodland",
    201: "Douglas-fir",
    221: "Ponderosa pine",
    264: "Pacific silver fir",
    266: "Engelmann spruce / subalpine fir",
    267: "Grand fir",
    281: "Lodgepole pine",
    301: "Western hemlock",
    371: "California mixed conifer",
    406: "Loblolly pine / hardwood",
    503: "White oak / red oak / hickory",
    520: "Mixed upland hardwoods",
    602: "Sweetgum / Nuttall oak / willow oak",
    607: "Baldcypress / water tupelo",
    608: "Sweetbay / swamp tupelo / red maple",
    706: "Sugarberry / hackberry / elm / green ash",
    801: "Sugar maple / beech / yellow birch",
    901: "Aspen",
    923: "Oregon white oak",
    924: "Blue oak",
}

ENMAP_TREEMAP = DatasetCard(
    name="enmap_treemap",
    task=SEGMENTATION,
    task_type="tree species seg.",
    sensor="EnMAP",
    sensor_dir="enmap",
    label_dir="treemap",
    label_source="TreeMap",
    codes=CODES,
    class_names=tuple(FIA_NAMES[c] for c in CODES),
    citation="Braham et al., SpectralEarth, IEEE JSTARS 2025; Riley et al., TreeMap 2016 (USDA FS)",
)
