"""The numbers a user checks first about a curated dataset (``spectralearth summary``, the
``dataset_summary`` asset); its figures are in :mod:`spectralearth.plots.patches`."""

from __future__ import annotations

import pandas as pd


def dataset_summary(index: pd.DataFrame) -> dict:
    """The numbers a user checks first about a curated dataset."""
    if len(index) == 0:
        return {"patches": 0, "locations": 0, "multitemporal_share": 0.0, "scenes": 0}
    dates = index.groupby("location_id")["scene_id"].nunique()
    per_scene = index.groupby("scene_id").size()
    return {
        "patches": int(len(index)),
        "locations": int(index["location_id"].nunique()),
        "multitemporal_share": float((dates > 1).mean()),
        "scenes": int(index["scene_id"].nunique()),
        "patches_per_scene_mean": float(per_scene.mean()),
        "patches_per_scene_max": int(per_scene.max()),
        **{f"split_{k}": int(v) for k, v in index["split"].value_counts().items()},
    }
