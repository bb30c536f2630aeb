"""Tree-species (forest type) segmentation with USDA Forest Service TreeMap: EnMAP-TreeMap.

Facts (torchgeo-style dataset card):

* **Task:** per-pixel forest-type classification over the conterminous USA.
* **Images:** SpectralEarth EnMAP patches, 202 bands.
* **Labels:** TreeMap raster values (FIA forest-type codes) reprojected (nearest) onto each
  patch grid; the 24 codes below are kept in that order, every other code is ignored.
* **Class names** are given as ``FIA forest type <code>``: the FIA legend was not available
  offline to check every name against, and the code is the exact identity.
* **Layout:** ``enmap_treemap/{enmap,treemap}/<location:07d>/<scene:05d>.tif`` + ``splits/``.

Citations: Braham et al., "SpectralEarth", IEEE JSTARS 2025; Riley et al., TreeMap 2016,
USDA Forest Service Research Data Archive.
"""

from __future__ import annotations

from spectralearth.downstream.datasets.base import SEGMENTATION, DatasetInfo, register

CODES = (
    184, 185, 221, 924, 105, 503, 520, 706, 801, 201, 264, 266,
    281, 301, 901, 406, 923, 142, 161, 602, 607, 608, 267, 371,
)  # fmt: skip

ENMAP_TREEMAP = register(
    DatasetInfo(
        name="enmap_treemap",
        task=SEGMENTATION,
        task_type="tree species seg.",
        sensor="EnMAP",
        sensor_dir="enmap",
        label_dir="treemap",
        label_source="TreeMap",
        codes=CODES,
        class_names=tuple(f"FIA forest type {c}" for c in CODES),
        citation="Braham et al., SpectralEarth, IEEE JSTARS 2025; Riley et al., TreeMap 2016 (USDA FS)",
    )
)
