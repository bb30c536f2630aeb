"""Synthetic land-cover segmentation on SpectralEarth patches (``synth_landcover``).

Facts (torchgeo-style dataset card):

* **Synthetic.** Images are the curated EnMAP patches of the pipeline's embedded synthetic
  L2A archive; labels are the class maps the synthetic generator wrote beside it
  (``<labels_dir>/<product>-CLASSMAP.TIF``, uint8, the product's full 30 m grid). The
  task therefore measures whether an encoder separates the generator's land-cover
  spectra; it is a pipeline check, not a benchmark number comparable with the paper's
  downstream datasets (EnMAP-CDL, EnMAP-NLCD, EnMAP-CORINE, ...).
* **Source:** the patch index (``index.parquet``), the patch GeoTIFFs (int16, 202 bands,
  reflectance x 10000) and the generator's ``classes.json`` (``{"1": "water", ...}``).
* **Task:** per-pixel classification (semantic segmentation). Label 0 means "no label"
  and is ignored; classes ``1..K`` become ``0..K-1`` in the dataset.
* **Splits:** the index's location-disjoint ``train`` / ``val`` / ``test`` split.
  Final numbers train on ``train`` and report on ``test``; ``val`` is kept for later
  hyper-parameter selection and is unused for now.
* **Layout** (the released-data layout of SpectralEarth's downstream datasets)::

      <out_dir>/
          enmap/<location:07d>/<scene:05d>.tif       hard link to (or copy of) the patch
          landcover/<location:07d>/<scene:05d>.tif   uint8 class map window, patch CRS/transform
          splits/{train,val,test}.txt               one ``<location:07d>/<scene:05d>.tif`` a line
          classes.json                              {"1": "water", ...}

:class:`SegmentationDataset` reads this layout, or any folder laid out as
``<root>/{<sensor>,<label>}/...`` + ``splits/``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import torch
from rasterio.windows import Window
from torch.utils.data import Dataset

from spectralearth.io import atomic_path, atomic_write_text

SPLITS = ("train", "val", "test")
IGNORE_INDEX = -1
SENSOR_DIR = "enmap"
LABEL_DIR = "landcover"
INDEX_COLUMNS = (
    "patch_id",
    "location_id",
    "scene_id",
    "product",
    "row_off",
    "col_off",
    "patch_size",
    "split",
    "path",
)


def relative_name(location_id: int, scene_id: int) -> str:
    """``<location:07d>/<scene:05d>.tif``: a patch's name inside a sensor or label folder."""
    return f"{int(location_id):07d}/{int(scene_id):05d}.tif"


def _link_or_copy(src: Path, dst: Path) -> str:
    """Place ``src`` at ``dst`` atomically: a hard link where possible, else a copy."""
    if dst.exists():
        try:
            if os.path.samefile(src, dst):
                return "link"
        except OSError:
            pass
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
            how = "link"
        except OSError:  # other file system, or links not allowed
            shutil.copyfile(src, tmp)
            how = "copy"
    return how


def _read_classes(labels_dir: Path) -> dict[int, str]:
    path = labels_dir / "classes.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the synthetic generator's class list is missing")
    raw = json.loads(path.read_text())
    classes = {int(k): str(v) for k, v in raw.items()}
    if 0 in classes:
        raise ValueError(f"{path}: class id 0 is reserved for 'no label'")
    if any(not 1 <= k <= 255 for k in classes):
        raise ValueError(f"{path}: class ids must lie in 1..255 (uint8 class maps)")
    return dict(sorted(classes.items()))


def _check_alignment(classmap, patch, row_off: int, col_off: int, where: str) -> None:
    """The patch grid must be the class map grid shifted by (row_off, col_off)."""
    if classmap.crs is None or patch.crs is None:
        return
    if classmap.crs != patch.crs:
        raise ValueError(
            f"{where}: patch CRS {patch.crs} differs from class map CRS {classmap.crs}"
        )
    ct, pt = classmap.transform, patch.transform
    x0, y0 = ct * (col_off, row_off)
    tol_x, tol_y = 0.5 * abs(ct.a), 0.5 * abs(ct.e)
    if (
        abs(pt.c - x0) > tol_x
        or abs(pt.f - y0) > tol_y
        or not np.isclose(pt.a, ct.a)
        or not np.isclose(pt.e, ct.e)
    ):
        raise ValueError(
            f"{where}: patch origin ({pt.c}, {pt.f}) / pixel ({pt.a}, {pt.e}) does not match the "
            f"class map window at row {row_off}, col {col_off} ({x0}, {y0}) / ({ct.a}, {ct.e})"
        )


def build_synth_landcover(
    index_path: str | os.PathLike,
    patches_root: str | os.PathLike,
    labels_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Write the ``synth_landcover`` dataset in the released-data layout (see module doc).

    Returns counts for the UI: patches per split, labelled pixels per class (overall and
    per split), unlabelled pixels, and how many images were hard-linked vs copied. Patches
    of a product without a class map (a real scene that arrived later) are left out and
    counted per product (``without_labels``), never an error.
    """
    from spectralearth.synth import classmap_path

    index_path, patches_root = Path(index_path), Path(patches_root)
    labels_dir, out_dir = Path(labels_dir), Path(out_dir)
    classes = _read_classes(labels_dir)

    index = pd.read_parquet(index_path, columns=list(INDEX_COLUMNS))  # geometry not needed
    bad_splits = sorted(set(index["split"]) - set(SPLITS))
    if bad_splits:
        raise ValueError(f"{index_path}: unknown split values {bad_splits}")
    index = index.sort_values(["split", "location_id", "scene_id"]).reset_index(drop=True)

    split_lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    hist = {s: np.zeros(256, dtype=np.int64) for s in SPLITS}
    linked = copied = 0
    classmaps: dict[str, Any] = {}
    unlabelled: dict[str, int] = {}  # product without a class map -> patches left out
    try:
        for row in index.itertuples(index=False):
            name = relative_name(row.location_id, row.scene_id)
            src = patches_root / row.path
            size = int(row.patch_size)
            r0, c0 = int(row.row_off), int(row.col_off)
            if row.product in unlabelled:
                unlabelled[row.product] += 1
                continue
            if row.product not in classmaps:
                cm_path = classmap_path(labels_dir, row.product)
                if not cm_path.is_file():  # a real new scene has no class map: left out, counted
                    unlabelled[row.product] = 1
                    continue
                classmaps[row.product] = rasterio.open(cm_path)
            cm = classmaps[row.product]

            with rasterio.open(src) as patch:
                if (patch.height, patch.width) != (size, size):
                    raise ValueError(
                        f"{src}: {patch.height}x{patch.width} px, index says patch_size {size}"
                    )
                _check_alignment(cm, patch, r0, c0, f"{row.patch_id} ({row.product})")
                profile = {
                    "driver": "GTiff",
                    "width": size,
                    "height": size,
                    "count": 1,
                    "dtype": "uint8",
                    "crs": patch.crs,
                    "transform": patch.transform,
                    "compress": "deflate",
                }
            labels = cm.read(1, window=Window(c0, r0, size, size), boundless=True, fill_value=0)
            labels = labels.astype(np.uint8, copy=False)

            with atomic_path(out_dir / LABEL_DIR / name) as tmp:
                with rasterio.open(tmp, "w", **profile) as dst:
                    dst.write(labels, 1)
                    dst.update_tags(1, classes=json.dumps(classes), no_label=0)
            if _link_or_copy(src, out_dir / SENSOR_DIR / name) == "link":
                linked += 1
            else:
                copied += 1
            split_lines[row.split].append(name)
            hist[row.split] += np.bincount(labels.ravel(), minlength=256)
    finally:
        for ds in classmaps.values():
            ds.close()

    for split, lines in split_lines.items():
        atomic_write_text(out_dir / "splits" / f"{split}.txt", "".join(f"{n}\n" for n in lines))
    atomic_write_text(
        out_dir / "classes.json", json.dumps({str(k): v for k, v in classes.items()}, indent=2)
    )

    total = sum(hist.values())
    unknown = sorted(int(i) for i in np.flatnonzero(total[1:]) + 1 if int(i) not in classes)
    if unknown:
        raise ValueError(
            f"class maps hold ids {unknown} missing from {labels_dir / 'classes.json'}"
        )
    return {
        "out_dir": str(out_dir),
        "classes": {str(k): v for k, v in classes.items()},
        "patches": {s: len(split_lines[s]) for s in SPLITS},
        "class_pixels": {v: int(total[k]) for k, v in classes.items()},
        "class_pixels_by_split": {
            s: {v: int(hist[s][k]) for k, v in classes.items()} for s in SPLITS
        },
        "unlabelled_pixels": int(total[0]),
        "linked": linked,
        "copied": copied,
        "scenes_without_labels": len(unlabelled),
        "patches_without_labels": sum(unlabelled.values()),
        "without_labels": dict(sorted(unlabelled.items())),
    }


def load_stats(stats: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """Band statistics as a dict: a mapping is returned as is, a path is read as JSON."""
    if isinstance(stats, Mapping):
        return dict(stats)
    return json.loads(Path(stats).read_text())


class SegmentationDataset(Dataset):
    """A segmentation dataset laid out as ``<root>/{<sensor>,<label>}/...`` + ``splits/``.

    Item ``i`` is ``(image, mask)``: ``image`` float32 ``[C, H, W]`` normalised with the band
    statistics (``(x - mean) / std``, both in reflectance x 10000), ``mask`` int64 ``[H, W]``
    with label 0 -> ``ignore_index`` (-1) and class ids shifted to ``0..K-1`` (in the sorted
    order of ``classes.json`` when present, else ``id - 1``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        stats: str | os.PathLike | Mapping[str, Any],
        sensor: str = SENSOR_DIR,
        label: str = LABEL_DIR,
        ignore_index: int = IGNORE_INDEX,
    ):
        self.root = Path(root)
        self.split = split
        self.sensor = sensor
        self.label = label
        self.ignore_index = ignore_index
        split_file = self.root / "splits" / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"{split_file}: no split file {split!r}")
        self.files = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]

        st = load_stats(stats)
        self.mean = torch.as_tensor(np.asarray(st["mean"], dtype=np.float32))[:, None, None]
        self.std = torch.as_tensor(np.asarray(st["std"], dtype=np.float32))[:, None, None]
        if (self.std <= 0).any():
            raise ValueError("band statistics: every std must be > 0")

        lut = np.full(256, ignore_index, dtype=np.int64)
        classes_file = self.root / "classes.json"
        if classes_file.is_file():
            ids = sorted(int(k) for k in json.loads(classes_file.read_text()))
            names = json.loads(classes_file.read_text())
            self.classes: list[str] | None = [names[str(i)] for i in ids]
            lut[ids] = np.arange(len(ids))
        else:
            self.classes = None
            lut[1:] = np.arange(255)
        self._lut = torch.as_tensor(lut)

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        name = self.files[i]
        with rasterio.open(self.root / self.sensor / name) as src:
            image = torch.from_numpy(src.read().astype(np.float32))
        with rasterio.open(self.root / self.label / name) as src:
            mask = torch.from_numpy(src.read(1).astype(np.int64))
        if image.shape[0] != self.mean.shape[0]:
            raise ValueError(
                f"{name}: {image.shape[0]} bands, band statistics have {self.mean.shape[0]}"
            )
        if image.shape[1:] != mask.shape:
            raise ValueError(f"{name}: image {tuple(image.shape[1:])} vs mask {tuple(mask.shape)}")
        if mask.numel() and (mask.min() < 0 or mask.max() > 255):
            raise ValueError(f"{name}: label values must lie in 0..255")
        image = (image - self.mean) / self.std
        return image, self._lut[mask]


def class_mean_spectra(
    root: str | os.PathLike, split: str = "train", max_patches: int = 64
) -> tuple[dict[str, list[float]], list[float]]:
    """Mean raw spectrum (reflectance x 10000) of each class over up to ``max_patches``
    patches of a split, and the bands' centre wavelengths (from the patches' tags)."""
    root = Path(root)
    names = [
        ln.strip() for ln in (root / "splits" / f"{split}.txt").read_text().splitlines() if ln
    ][:max_patches]
    classes = json.loads((root / "classes.json").read_text())
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    wavelengths: list[float] = []
    for name in names:
        with rasterio.open(root / SENSOR_DIR / name) as src:
            image = src.read().astype(np.float64)
            if not wavelengths:
                tagged = src.tags().get("wavelengths")
                if tagged:
                    wavelengths = [float(w) for w in tagged.split(",")]
                else:  # untagged patches: the nominal 202-band view
                    from spectralearth.bands import view_wavelengths

                    nominal = view_wavelengths()
                    if src.count != len(nominal):
                        raise ValueError(f"{name}: no band wavelengths and {src.count} bands")
                    wavelengths = [float(w) for w in nominal]
        with rasterio.open(root / LABEL_DIR / name) as src:
            mask = src.read(1)
        for cls in np.unique(mask):
            if str(int(cls)) not in classes:
                continue
            pixels = image[:, mask == cls]
            sums[int(cls)] = sums.get(int(cls), 0) + pixels.sum(axis=1)
            counts[int(cls)] = counts.get(int(cls), 0) + pixels.shape[1]
    means = {classes[str(c)]: (sums[c] / counts[c]).tolist() for c in sorted(sums)}
    return means, wavelengths
