"""Tree-species segmentation with the French BD Forêt: EnMAP-BDForet.

Facts (torchgeo-style dataset card):

* **Task:** per-pixel tree-species (forest type) classification over France.
* **Images:** SpectralEarth EnMAP patches, 202 bands.
* **Labels:** IGN BD Forêt V2 polygons rasterised onto each patch grid after reprojection,
  holding SpectralEarth's integer species codes; the 12 codes below are kept in that order,
  every other code and pixels outside forest polygons are ignored.
* **Codes:** as the SpectralEarth reference code (GitHub ``AABNassim/spectral_earth``,
  ``configs/data/enmap_bdforet.yaml``: background 0 then these 12, same order) has them.
* **Class names** are given as ``BD Foret <code>`` for all 12 codes: the SpectralEarth
  reference code gives no names and no code-to-species table of the release was found.
  (A third-party fine-tuning repository built on that code, GitHub
  ``leonardijulia/TM_HSI_finetuning``, lists species-group names by class position in
  ``configs/predict_enmap_bdforet.py``; they are not used because they could not be
  checked against the release's table.)
* **Layout:** ``enmap_bdforet/{enmap,bdforet}/<location:07d>/<scene:05d>.tif`` + ``splits/``.

Citations: Braham et al., "SpectralEarth", IEEE JSTARS 2025; IGN, BD Forêt version 2.0.
"""

from __future__ import annotations

from spectralearth.cards.card import SEGMENTATION, DatasetCard

CODES = (1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 14, 16)

ENMAP_BDFORET = DatasetCard(
    name="enmap_bdforet",
    task=SEGMENTATION,
    task_type="tree species seg.",
    sensor="EnMAP",
    sensor_dir="enmap",
    label_dir="bdforet",
    label_source="BD Foret",
    codes=CODES,
    class_names=tuple(f"BD Foret {c}" for c in CODES),
    citation="Braham et al., SpectralEarth, IEEE JSTARS 2025; IGN BD Foret V2",
)
