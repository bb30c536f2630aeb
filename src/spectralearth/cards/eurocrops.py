"""Crop-type segmentation with EuroCrops parcels: EnMAP-EuroCrops.

Facts (torchgeo-style dataset card):

* **Task:** per-pixel crop-type classification (semantic segmentation) over Europe.
* **Images:** SpectralEarth EnMAP patches, 202 bands.
* **Labels:** EuroCrops parcel polygons (Hierarchical Crop and Agriculture Taxonomy, HCAT,
  10-digit codes) reprojected and rasterised onto each patch grid. The 15 HCAT codes below
  are kept in that order; every other code and pixels outside parcels are ignored. Label
  rasters need a 32-bit unsigned (or 64-bit) integer type: the codes exceed int32.
* **Codes:** as the SpectralEarth reference code (GitHub ``AABNassim/spectral_earth``,
  ``configs/data/enmap_eurocrops.yaml``: background 0 then these 15, same order) has them.
  That code gives no class names.
* **Class names** are the HCAT names of those codes, verbatim, from the EuroCrops authors'
  HCAT tables (GitHub ``maja601/EuroCrops``, ``hcat_core/HCAT3.csv``; ``HCAT2.csv`` gives
  the same names for these 15 codes). All 15 codes are in the table.
* **Layout:** ``enmap_eurocrops/{enmap,eurocrops}/<location:07d>/<scene:05d>.tif`` + ``splits/``.

Citations: Braham et al., "SpectralEarth", IEEE JSTARS 2025; Schneider et al., "EuroCrops:
The Largest Harmonized Open Crop Dataset Across the European Union", Scientific Data 2023.
"""

from __future__ import annotations

from spectralearth.cards.card import SEGMENTATION, DatasetCard

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

# HCAT names of the codes (EuroCrops hcat_core/HCAT3.csv, column HCAT3_name).
HCAT_NAMES = {
    3301010600: "grain_maize_corn_popcorn",
    3301010800: "triticale",
    3301020000: "legumes_dried_pulses_protein_crops",
    3301029900: "other_dry_pulses",
    3301060300: "cotton",
    3301060500: "sunflower",
    3301090205: "lolium_ryegrass",
    3301090301: "alfalfa_lucerne",
    3301090303: "clover",
    3301160000: "soy_soybeans",
    3303010000: "orchards_fruits",
    3303030100: "almond",
    3303030600: "walnuts",
    3303050000: "olive_plantations",
    3303060000: "vineyards_wine_vine_rebland_grapes",
}

ENMAP_EUROCROPS = DatasetCard(
    name="enmap_eurocrops",
    task=SEGMENTATION,
    task_type="crop-type seg.",
    sensor="EnMAP",
    sensor_dir="enmap",
    label_dir="eurocrops",
    label_source="EuroCrops HCAT",
    codes=HCAT_CODES,
    class_names=tuple(HCAT_NAMES[c] for c in HCAT_CODES),
    citation="Braham et al., SpectralEarth, IEEE JSTARS 2025; Schneider et al., EuroCrops, Sci. Data 2023",
)
