"""Real land-cover segmentation on EnMAP tiles over Potsdam (``enmap_potsdam``).

Facts (torchgeo-style dataset card; the loader is
:class:`spectralearth.downstream.datasets.potsdam.PotsdamDataset`):

* **Images:** 18 tiles of 32 x 32 px cut from one real EnMAP L2A scene over Potsdam,
  Germany (2022-07-24, DLR processor v1.3.2), 30 m, UTM 33N, 224 bands, float32 with a
  GDAL scale of 1e-4 (reflectance), nodata -32768, bands in detector order; read as the
  202-band SpectralEarth view chosen **by wavelength**.
* **Labels:** ``labels/<same name>.tif``, 0 = unlabelled (ignored), 1-6 = six land-cover
  classes -> ``0..5`` (names inferred from the EnMAP-Box example data's nomenclature; the
  ids are exact).
* **Splits:** the source's own ``train_files.csv`` / ``validation_files.csv`` /
  ``test_files.csv`` (14 / 2 / 2 tiles).

Source: EnMAP-Box example data (GPL-3.0; imagery (c) DLR). Do not republish the imagery.
"""

from __future__ import annotations

from spectralearth.cards.card import SEGMENTATION, DatasetCard

ENMAP_POTSDAM = DatasetCard(
    name="enmap_potsdam",
    task=SEGMENTATION,
    task_type="land-cover seg.",
    sensor="EnMAP",
    sensor_dir="images",
    label_dir="labels",
    label_source="EnMAP-Box example data",
    codes=(1, 2, 3, 4, 5, 6),
    class_names=("roof", "pavement", "low vegetation", "tree", "soil", "water"),
    citation="EnMAP-Box example data (GPL-3.0; imagery (c) DLR)",
    patch_size=32,
    layout="potsdam",
)
