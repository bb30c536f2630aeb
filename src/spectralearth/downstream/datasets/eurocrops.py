"""Crop-type segmentation with EuroCrops parcels: EnMAP-EuroCrops.

Facts (torchgeo-style dataset card):

* **Task:** per-pixel crop-type classification (semantic segmentation) over Europe.
* **Images:** SpectralEarth EnMAP patches, 202 bands.
* **Labels:** EuroCrops parcel polygons (Hierarchical Crop and Agriculture Taxonomy, HCAT,
  10-digit codes) reprojected and rasterised onto each patch grid. The 15 HCAT codes below
  are kept in that order; every other code and pixels outside parcels are ignored. Label
  rasters need a 32-bit unsigned (or 64-bit) integer type: the codes exceed int32.
* **Class names** are given as ``HCAT <code>``: the HCAT legend text was not available
  offline to check against, and the code is the exact identity.
* **Layout:** ``enmap_eurocrops/{enmap,eurocrops}/<location:07d>/<scene:05d>.tif`` + ``splits/``.

Citations: Braham et al., "SpectralEarth", IEEE JSTARS 2025; Schneider et al., "EuroCrops:
The Largest Harmonized Open Crop Dataset Across the European Union", Scientific Data 2023.
"""

from __future__ import annotations

from spectralearth.downstream.datasets.base import SEGMENTATION, DatasetInfo, register

HCAT_CODES = (
    3301090205,
    3301010600,
    3301090303,
    3301010800,
    3301090301,
    3303060000,
    3303030600,
    3303050000,
    3303030100,
    3301060500,
    3301060300,
    3303010000,
    3301020000,
    3301160000,
    3301029900,
)

ENMAP_EUROCROPS = register(
    DatasetInfo(
        name="enmap_eurocrops",
        task=SEGMENTATION,
        task_type="crop-type seg.",
        sensor="EnMAP",
        sensor_dir="enmap",
        label_dir="eurocrops",
        label_source="EuroCrops HCAT",
        codes=HCAT_CODES,
        class_names=tuple(f"HCAT {c}" for c in HCAT_CODES),
        citation="Braham et al., SpectralEarth, IEEE JSTARS 2025; Schneider et al., EuroCrops, Sci. Data 2023",
    )
)
