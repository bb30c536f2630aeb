"""Soil-parameter regression from hyperspectral field images: HYPERVIEW (``hyperview``).

Facts (torchgeo-style dataset card; the loader is
:class:`spectralearth.downstream.datasets.hyperview.HyperviewDataset`):

* **Task:** regression of four soil parameters per agricultural field: phosphorus (P),
  potassium (K), magnesium (Mg) and pH, one value each per image. The tenth downstream task
  of the SpectralEarth reference code (``configs/experiment/downstream/hyperview``).
* **Images:** the HYPERVIEW challenge's field patches, 150 bands (462-942 nm), airborne
  imagery over Poland resampled to the Intuition-1 satellite's bands; each field is its own
  small patch of irregular size. Stored as ``.npz`` with the cube under ``data``
  ``[150, H, W]`` (and a field ``mask`` the reference code does not read, nor does this
  loader). Every image is resized to 128 x 128 px (bicubic, corners aligned), as the
  reference dataset does.
* **Targets:** the ``P``, ``K``, ``Mg``, ``pH`` columns of the split CSVs, standardised
  (mean ~0, std ~1 over the 1,732 labelled fields) as the reference code ships them, so the
  naive baseline that predicts the mean predicts 0: the challenge's score and the reference's
  loss divide each parameter's MSE by that baseline's.
* **Layout** (the reference datamodule's)::

      <root>/images/<sample_index>.npz
      <root>/splits/{train,val,test}.csv   columns sample_index, P, K, Mg, pH (others ignored)

  The reference code ships ``train.csv`` (1,385 fields) and ``val.csv`` (347); the
  challenge's test labels were not released, so ``test.csv`` is the user's to provide.
* **Normalisation** (paper recipe): the reference code's HYPERVIEW statistics
  (``hyperview_statistics/{mu,sigma}.npy``).

Citations: Nalepa et al., "The Hyperview Challenge: Estimating Soil Parameters from
Hyperspectral Images", IEEE ICIP 2022; Braham et al., "SpectralEarth", IEEE JSTARS 2025.
"""

from __future__ import annotations

from spectralearth.cards.card import REGRESSION, DatasetCard

TARGETS = ("P", "K", "Mg", "pH")
SENSOR = "Intuition-1"
BANDS = 150

HYPERVIEW = DatasetCard(
    name="hyperview",
    task=REGRESSION,
    task_type="soil regression",
    sensor=SENSOR,
    sensor_dir="images",
    label_dir="splits",
    label_source="HYPERVIEW challenge ground truth",
    codes=(),
    class_names=TARGETS,  # one output per soil parameter
    citation=(
        "Nalepa et al., The Hyperview Challenge, IEEE ICIP 2022; Braham et al., SpectralEarth, "
        "IEEE JSTARS 2025"
    ),
    patch_size=128,
    layout="hyperview",
    bands_override=BANDS,
)
