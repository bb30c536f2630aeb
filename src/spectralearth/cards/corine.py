"""Multi-label land-cover classification with CORINE Land Cover: EnMAP-CORINE.

Facts (torchgeo-style dataset card):

* **Task:** multi-label classification: which of BigEarthNet's 19 classes occur in a patch.
* **Images:** SpectralEarth EnMAP patches over Europe, 202 bands.
* **Labels:** a CORINE Land Cover raster window per patch holding CLC level-3 codes
  (111 ... 523), reprojected (nearest) onto the patch grid. The 43 codes below are mapped to
  the 19-class BigEarthNet nomenclature (Sumbul et al.); the codes BigEarthNet drops (road
  and rail networks, port areas, airports, mineral extraction, dump and construction sites,
  green urban areas, sport and leisure facilities, bare rock, burnt areas, intertidal flats)
  and any other value are ignored. The target of a patch is the multi-hot vector of the
  classes of its labelled pixels.
* **Layout:** ``enmap_corine/{enmap,corine}/<location:07d>/<scene:05d>.tif`` + ``splits/``.

Citations: Braham et al., "SpectralEarth", IEEE JSTARS 2025; Copernicus Land Monitoring
Service, CORINE Land Cover; Sumbul et al., "BigEarthNet-MM", IEEE GRSM 2021 (19-class
nomenclature).
"""

from __future__ import annotations

from spectralearth.cards.card import MULTILABEL, DatasetCard

# BigEarthNet's 19 classes, in their usual order.
BEN19_NAMES = (
    "urban fabric",
    "industrial or commercial units",
    "arable land",
    "permanent crops",
    "pastures",
    "complex cultivation patterns",
    "land principally occupied by agriculture, with significant areas of natural vegetation",
    "agro-forestry areas",
    "broad-leaved forest",
    "coniferous forest",
    "mixed forest",
    "natural grassland and sparsely vegetated areas",
    "moors, heathland and sclerophyllous vegetation",
    "transitional woodland, shrub",
    "beaches, dunes, sands",
    "inland wetlands",
    "coastal wetlands",
    "inland waters",
    "marine waters",
)

# The 43 CLC level-3 codes of BigEarthNet, in order.
CLC43_CODES = (
    111, 112, 121, 122, 123, 124, 131, 132, 133, 141, 142,
    211, 212, 213, 221, 222, 223, 231, 241, 242, 243, 244,
    311, 312, 313, 321, 322, 323, 324, 331, 332, 333, 334,
    411, 412, 421, 422, 423, 511, 512, 521, 522, 523,
)  # fmt: skip

# CLC code -> BigEarthNet-19 class index (codes absent here are ignored).
CLC_TO_BEN19 = {
    111: 0, 112: 0, 121: 1,
    211: 2, 212: 2, 213: 2, 221: 3, 222: 3, 223: 3, 241: 3, 231: 4, 242: 5, 243: 6, 244: 7,
    311: 8, 312: 9, 313: 10, 321: 11, 333: 11, 322: 12, 323: 12, 324: 13, 331: 14,
    411: 15, 412: 15, 421: 16, 422: 16, 511: 17, 512: 17, 521: 18, 522: 18, 523: 18,
}  # fmt: skip

ENMAP_CORINE = DatasetCard(
    name="enmap_corine",
    task=MULTILABEL,
    task_type="multi-label",
    sensor="EnMAP",
    sensor_dir="enmap",
    label_dir="corine",
    label_source="CORINE Land Cover",
    codes=CLC43_CODES,
    class_names=BEN19_NAMES,
    code_to_class=CLC_TO_BEN19,
    citation=(
        "Braham et al., SpectralEarth, IEEE JSTARS 2025; Copernicus CORINE Land Cover; "
        "Sumbul et al., BigEarthNet-MM, IEEE GRSM 2021"
    ),
)
