"""Every downstream dataset the project knows, and one way to open any of them.

``open_split(spec, split)`` takes a registered name (looked up under the downstream data
folder), or a folder: the Potsdam layout (images/, labels/, *_files.csv), the HYPERVIEW
layout (images/*.npz, splits/*.csv), the released layout of a registered dataset (folder
named after it, or ``name=``), or any folder in the released layout with ``classes.json``
(e.g. the built ``synth_landcover``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spectralearth.cards import PAPER_DATASETS, get_card
from spectralearth.downstream.datasets import hyperview as _hyperview
from spectralearth.downstream.datasets import potsdam as _potsdam
from spectralearth.downstream.datasets.base import (
    SEGMENTATION,
    ReleasedDataset,
    band_stats,
)

POTSDAM_ENV = "SPECTRALEARTH_POTSDAM"


def default_potsdam_dir() -> Path:
    """``$SPECTRALEARTH_POTSDAM``, else ``../shared/data/enmap_potsdam`` beside the repo."""
    if os.environ.get(POTSDAM_ENV):
        return Path(os.environ[POTSDAM_ENV])
    from spectralearth.config import project_root

    return project_root().parent / "shared" / "data" / "enmap_potsdam"


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset lives and how to read it (``kind``: released, potsdam, layout)."""

    name: str
    kind: str
    root: Path
    split_dir: Path | None = None


def resolve(
    spec: str | os.PathLike,
    downstream_dir: str | os.PathLike | None = None,
    name: str | None = None,
    split_dir: str | os.PathLike | None = None,
) -> DatasetSource:
    """A dataset name or folder -> :class:`DatasetSource` (raises with what was tried)."""
    text = str(spec)
    path = Path(text)
    split_dir = Path(split_dir) if split_dir else None
    if not path.is_dir():
        key = text.lower()
        if key in ("potsdam", _potsdam.NAME):
            candidates = [default_potsdam_dir()]
            if downstream_dir:
                candidates.insert(0, Path(downstream_dir) / _potsdam.NAME)
            for c in candidates:
                if _potsdam.is_potsdam_layout(c):
                    return DatasetSource(_potsdam.NAME, "potsdam", c)
            raise FileNotFoundError(
                f"Potsdam task not found in {', '.join(map(str, candidates))} "
                f"(set {POTSDAM_ENV} or pass the folder)"
            )
        if downstream_dir and (Path(downstream_dir) / text).is_dir():
            path = Path(downstream_dir) / text
        else:
            where = f" in {downstream_dir}" if downstream_dir else ""
            raise FileNotFoundError(
                f"dataset {text!r}: no such folder{where}; known names: "
                f"{', '.join(PAPER_DATASETS)}, {_potsdam.NAME}, {_hyperview.NAME} (released "
                f"data goes to <data_dir>/downstream/<name>/)"
            )
    if _potsdam.is_potsdam_layout(path):
        return DatasetSource(_potsdam.NAME, "potsdam", path)
    if _hyperview.is_hyperview_layout(path) or (name or path.name) == _hyperview.NAME:
        return DatasetSource(_hyperview.NAME, "hyperview", path, split_dir)
    registered = name or (path.name if path.name in PAPER_DATASETS else None)
    if registered:
        get_card(registered)
        return DatasetSource(registered, "released", path, split_dir)
    if (path / "classes.json").is_file():
        return DatasetSource(path.name, "layout", path, split_dir)
    raise ValueError(
        f"{path}: not a known dataset layout (Potsdam images/+labels/+*_files.csv, a folder "
        f"named after a registered dataset, or a released layout with classes.json)"
    )


def open_split(
    source: DatasetSource | str | os.PathLike,
    split: str,
    stats: Mapping[str, Any] | None = None,
    downstream_dir: str | os.PathLike | None = None,
    resize_to: int | None = None,
):
    """The torch dataset of one split. ``stats=None`` normalises with train-split statistics;
    ``resize_to``: the size of datasets whose images are resized (HYPERVIEW; default its
    card's 128 px), ignored by datasets of fixed-size patches.

    Every returned dataset has ``task``, ``classes``, ``num_classes`` (regression: outputs),
    ``bands``, ``stats`` and ``read_labels(i)`` (class indices, -1 = ignore;
    regression: the target values).
    """
    src = source if isinstance(source, DatasetSource) else resolve(source, downstream_dir)
    if src.kind == "potsdam":
        return _potsdam.PotsdamDataset(src.root, split, stats)
    if src.kind == "hyperview":
        size = resize_to or _hyperview.CARD.patch_size
        return _hyperview.HyperviewDataset(src.root, split, stats, src.split_dir, size)
    if src.kind == "released":
        return ReleasedDataset(src.root, src.name, split, stats, src.split_dir)
    return _open_layout(src, split, stats)


def _open_layout(src: DatasetSource, split: str, stats: Mapping[str, Any] | None):
    """A built folder (``synth_landcover`` style) through :class:`SegmentationDataset`."""
    import numpy as np
    import rasterio

    from spectralearth.downstream.datasets.synth_landcover import SegmentationDataset

    if src.split_dir and src.split_dir != src.root / "splits":
        raise ValueError(f"{src.root}: a built dataset reads its own splits/ folder")
    if stats is None:
        train = SegmentationDataset(src.root, "train", {"mean": [0.0], "std": [1.0]})
        imgs = []
        for f in train.files[:256]:
            with rasterio.open(src.root / train.sensor / f) as r:
                imgs.append(r.read().astype(np.float32))
        stats = band_stats(imgs)
    ds = SegmentationDataset(src.root, split, stats)
    ds.task = SEGMENTATION
    ds.stats = {"mean": list(stats["mean"]), "std": list(stats["std"])}
    ds.bands = len(ds.stats["mean"])

    def read_labels(i: int):
        return ds[i][1].numpy()

    ds.read_labels = read_labels
    return ds


def sensor_of(source: DatasetSource) -> tuple[str, int]:
    """The sensor (as dataset cards name it) and band count of a dataset, without reading
    its images where a card says them (a built layout: EnMAP, bands of its first patch)."""
    if source.kind == "layout":
        return "EnMAP", _first_band_count(source.root)
    card = get_card(source.name)
    return card.sensor, card.bands


def describe_datasets(downstream_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One row per known dataset: name, task, sensor, bands, classes, status, path."""
    downstream_dir = Path(downstream_dir) if downstream_dir else None
    rows = []
    for name in PAPER_DATASETS:
        info = get_card(name)
        here = downstream_dir / name if downstream_dir else None
        present = bool(here and (here / info.sensor_dir).is_dir())
        rows.append(
            {
                "name": name,
                "task": info.task_type,
                "sensor": info.sensor,
                "bands": info.bands,
                "classes": info.num_classes,
                "status": "present" if present else "registered",
                "path": str(here) if present else "",
            }
        )
    pots = default_potsdam_dir()
    if downstream_dir and _potsdam.is_potsdam_layout(downstream_dir / _potsdam.NAME):
        pots = downstream_dir / _potsdam.NAME
    ok = _potsdam.is_potsdam_layout(pots)
    rows.append(
        {
            "name": _potsdam.NAME,
            "task": "land-cover seg.",
            "sensor": _potsdam.SENSOR,
            "bands": _potsdam.BANDS,
            "classes": len(_potsdam.CLASS_NAMES),
            "status": "present" if ok else "absent",
            "path": str(pots) if ok else "",
        }
    )
    hv = downstream_dir / _hyperview.NAME if downstream_dir else None
    hv_ok = bool(hv and _hyperview.is_hyperview_layout(hv))
    rows.append(
        {
            "name": _hyperview.NAME,
            "task": _hyperview.CARD.task_type,
            "sensor": _hyperview.CARD.sensor,
            "bands": _hyperview.CARD.bands,
            "classes": _hyperview.CARD.num_classes,
            "status": "present" if hv_ok else "registered",
            "path": str(hv) if hv_ok else "",
        }
    )
    if downstream_dir and downstream_dir.is_dir():
        known = set(PAPER_DATASETS) | {_potsdam.NAME, _hyperview.NAME}
        for folder in sorted(p for p in downstream_dir.iterdir() if p.is_dir()):
            if folder.name in known or not (folder / "splits").is_dir():
                continue
            classes_file = folder / "classes.json"
            n_classes = len(json.loads(classes_file.read_text())) if classes_file.is_file() else 0
            bands = _first_band_count(folder)
            rows.append(
                {
                    "name": folder.name,
                    "task": "seg. (built)",
                    "sensor": "EnMAP",
                    "bands": bands,
                    "classes": n_classes,
                    "status": "built",
                    "path": str(folder),
                }
            )
    return rows


def _first_band_count(folder: Path) -> int:
    import rasterio

    for split in ("train", "val", "test"):
        f = folder / "splits" / f"{split}.txt"
        if f.is_file():
            for line in f.read_text().splitlines():
                if line.strip():
                    for sensor_dir in ("enmap", "desis", "eo1"):
                        p = folder / sensor_dir / line.strip()
                        if p.is_file():
                            with rasterio.open(p) as src:
                                return src.count
    return 0
