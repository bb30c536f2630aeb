"""Land-cover segmentation over Côte d'Ivoire with the BNETD land-cover map: EnMAP-BNETD.

Facts (torchgeo-style dataset card):

* **Task:** per-pixel land-cover classification (semantic segmentation).
* **Images:** SpectralEarth EnMAP patches, 202 bands.
* **Labels:** the land-cover raster of the Bureau National d'Etudes Techniques et de
  Développement (BNETD, Côte d'Ivoire) reprojected (nearest) onto each patch grid; the 10
  codes below are kept in that order, every other code is ignored.
* **Codes:** as the SpectralEarth reference code (GitHub ``AABNassim/spectral_earth``,
  ``configs/data/enmap_bnetd.yaml``: background 0 then these 10, same order) has them.
* **Class names** are given as ``BNETD <code>`` for all 10 codes: the SpectralEarth
  reference code gives no names, and no BNETD legend keyed by code was found to take them
  from. (A third-party fine-tuning repository built on that code, GitHub
  ``leonardijulia/TM_HSI_finetuning``, lists names by class position in
  ``configs/predict_enmap_bnetd.py``; they are not used because they could not be checked
  against the BNETD legend.)
* **Layout:** ``enmap_bnetd/{enmap,bnetd}/<location:07d>/<scene:05d>.tif`` + ``splits/``.

Citations: Braham et al., "SpectralEarth", IEEE JSTARS 2025; BNETD land-cover map of Côte
d'Ivoire.
"""

from __future__ import annotations

from spectralearth.cards.card import SEGMENTATION, DatasetCard

CODES = (1, 2, 3, 6, 9, 10, 13, 15, 16, 21)

ENMAP_BNETD = DatasetCard(
    name="enmap_bnetd",
    task=SEGMENTATION,
    task_type="land-cover seg.",
    sensor="EnMAP",
    sensor_dir="enmap",
    label_dir="bnetd",
    label_source="BNETD",
    codes=CODES,
    class_names=tuple(f"BNETD {c}" for c in CODES),
    citation="Braham et al., SpectralEarth, IEEE JSTARS 2025; BNETD land cover (Cote d'Ivoire)",
)
