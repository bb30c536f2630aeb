"""The dataset card: plain facts about one downstream dataset (no torch).

Label rasters hold the label source's own codes (CDL 1, 2, ..., EuroCrops HCAT 3301090205,
...); the codes a dataset keeps become classes ``0..K-1`` in the order of
:attr:`DatasetCard.codes`, every other code becomes the ignore index (-1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

IGNORE_INDEX = -1
SEGMENTATION = "segmentation"
MULTILABEL = "multilabel"
REGRESSION = "regression"
TASKS = (SEGMENTATION, MULTILABEL, REGRESSION)

# Band counts of the sensors' SpectralEarth views (water-vapour and bad bands removed).
SENSOR_BANDS = {"EnMAP": 202, "DESIS": 235, "Hyperion": 198}


@dataclass(frozen=True)
class DatasetCard:
    """Facts about one downstream dataset.

    ``codes`` are the label source's codes kept, in class order; for a multi-label task
    ``code_to_class`` maps each source code to its class index (several codes may share
    one class, e.g. CORINE's 43 codes onto BigEarthNet's 19 classes). ``layout`` says how
    the files lie: ``released`` (SpectralEarth's ``<sensor_dir>/<loc>/<scene>.tif``) or the
    dataset's own (``potsdam``).
    """

    name: str
    task: str  # one of TASKS
    task_type: str  # human wording: "crop-type seg.", ...
    sensor: str  # "EnMAP" | "DESIS" | "Hyperion"
    sensor_dir: str
    label_dir: str
    label_source: str
    codes: tuple[int, ...]
    class_names: tuple[str, ...]
    citation: str = ""
    code_to_class: Mapping[int, int] = field(default_factory=dict)
    patch_size: int | None = None
    layout: str = "released"
    bands_override: int | None = None  # sensors outside SENSOR_BANDS (e.g. HYPERVIEW's 150)

    def __post_init__(self) -> None:
        if self.sensor not in SENSOR_BANDS and self.bands_override is None:
            raise ValueError(f"{self.name}: unknown sensor {self.sensor!r}")
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: unknown task {self.task!r}")
        if len(set(self.codes)) != len(self.codes):
            raise ValueError(f"{self.name}: duplicate source codes")
        if (
            self.task != REGRESSION
            and not self.code_to_class
            and len(self.class_names) != len(self.codes)
        ):
            raise ValueError(f"{self.name}: {len(self.codes)} codes, {len(self.class_names)} names")

    @property
    def bands(self) -> int:
        return self.bands_override or SENSOR_BANDS[self.sensor]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_of_code(self) -> dict[int, int]:
        """Source code -> class index (0..K-1)."""
        if self.code_to_class:
            return dict(self.code_to_class)
        return {int(c): i for i, c in enumerate(self.codes)}

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Source codes -> class indices (int64), codes not kept -> ``IGNORE_INDEX``."""
        return encode_codes(labels, self.class_of_code())


def encode_codes(labels: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Map integer codes (any width, e.g. 10-digit EuroCrops HCAT) through ``mapping``."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "f":
        labels = np.where(np.isfinite(labels), labels, -1).astype(np.int64)
    values, inverse = np.unique(labels, return_inverse=True)
    lut = np.array([mapping.get(int(v), IGNORE_INDEX) for v in values], dtype=np.int64)
    return lut[inverse].reshape(labels.shape)
