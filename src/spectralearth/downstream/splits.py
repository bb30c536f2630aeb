"""Split schemes for built downstream datasets, and how much a random split flatters results.

Every scheme keeps the patches of one location (its dates) in one split, as the official
SpectralEarth lists do (no location of ``spectralearth_reference/splits/<dataset>/`` is in
two splits). They differ in what else travels together:

* ``random`` (the paper's): locations are shuffled and cut by count. Neighbouring locations
  (the same field, forest stand or town seen by adjacent patches) land in different splits,
  so spatial autocorrelation leaks from train to test.
* ``block``: locations are grouped into square blocks of ``block_m`` metres of the patch's
  own (UTM) grid; whole blocks are shuffled and assigned.
* ``scene``: scenes that share a location are joined (revisits of one place), and each such
  group of scenes goes to one split with every location it holds.

:func:`split_gap` trains and scores one evaluator (default: the per-pixel random forest
baseline) under the random and a blocked scheme and reports the metric gap: how much the
random split flatters the result.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SCHEMES = ("random", "block", "scene")
SPLITS = ("train", "val", "test")
DEFAULT_VAL_FRAC = 0.10  # the official lists hold ~75 / 10 / 15 % of the patches
DEFAULT_TEST_FRAC = 0.15
BLOCK_PATCHES = 4  # default block side, in patch widths


def _union_find_groups(pairs: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Connected components of an edge list: node -> smallest node of its component."""
    parent: dict[int, int] = {}

    def find(a: int) -> int:
        parent.setdefault(a, a)
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {a: find(a) for a in list(parent)}


def group_keys(patches: pd.DataFrame, scheme: str, block_m: float | None = None) -> pd.Series:
    """The unit each patch is assigned with (a string key per row).

    ``patches`` needs ``location_id`` and ``scene_id``; ``block`` also ``crs``, ``x`` and
    ``y`` (upper-left corner in the patch CRS, metres) and ``size_m`` (patch width).
    """
    if scheme == "random":
        return patches["location_id"].map(lambda v: f"loc{int(v)}")
    if scheme == "scene":
        # scenes joined through shared locations: revisits of one place form one group
        pairs = [
            (-1 - int(s), int(loc))
            for loc, s in zip(patches["location_id"], patches["scene_id"], strict=True)
        ]
        comp = _union_find_groups(pairs)
        return patches["location_id"].map(lambda v: f"grp{comp[int(v)]}")
    if scheme == "block":
        side = float(block_m) if block_m else float(patches["size_m"].max()) * BLOCK_PATCHES
        bx = np.floor(patches["x"].to_numpy(float) / side).astype(np.int64)
        by = np.floor(patches["y"].to_numpy(float) / side).astype(np.int64)
        keys = [f"{c}:{a}:{b}" for c, a, b in zip(patches["crs"].astype(str), bx, by, strict=True)]
        # a location's dates share one grid cell, so one block; join any that do not
        per_loc = (
            pd.Series(keys, index=patches.index).groupby(patches["location_id"]).transform("min")
        )
        return per_loc
    raise ValueError(f"unknown split scheme {scheme!r}; have {SCHEMES}")


def assign_splits(
    patches: pd.DataFrame,
    scheme: str = "random",
    val_frac: float = DEFAULT_VAL_FRAC,
    test_frac: float = DEFAULT_TEST_FRAC,
    seed: int = 0,
    block_m: float | None = None,
) -> pd.Series:
    """``train`` / ``val`` / ``test`` per patch row (seeded, whole groups at a time).

    Groups are shuffled and added to test until it holds ``test_frac`` of the patches, then
    to val; the rest is train. With three groups or more, no split is left empty.
    """
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"bad split fractions val={val_frac}, test={test_frac}")
    keys = group_keys(patches, scheme, block_m)
    sizes = keys.value_counts().sort_index()  # sorted: independent of row order
    order = np.random.default_rng(seed).permutation(len(sizes))
    groups, counts = sizes.index.to_numpy()[order], sizes.to_numpy()[order]
    n = int(counts.sum())
    split_of: dict[str, str] = {}
    filled = {"test": 0, "val": 0}
    targets = {"test": test_frac * n, "val": val_frac * n}
    i = 0
    for split in ("test", "val"):
        # at least one group when the fraction asks for any and groups remain for train
        while i < len(groups) - 1 and (
            filled[split] < targets[split]
            and (filled[split] == 0 or filled[split] + counts[i] / 2 <= targets[split])
        ):
            split_of[groups[i]] = split
            filled[split] += int(counts[i])
            i += 1
    for g in groups[i:]:
        split_of[g] = "train"
    return keys.map(split_of).rename("split")


def write_split_files(
    root: str | os.PathLike, names: Sequence[str], splits: Sequence[str], sub: str = ""
) -> dict[str, int]:
    """``<root>/splits[/<sub>]/{train,val,test}.txt`` (sorted names); counts per split."""
    from spectralearth.io import atomic_write_text

    folder = Path(root) / "splits" / sub if sub else Path(root) / "splits"
    frame = pd.DataFrame({"name": list(names), "split": list(splits)})
    counts = {}
    for split in SPLITS:
        lines = sorted(frame.loc[frame["split"] == split, "name"])
        atomic_write_text(folder / f"{split}.txt", "".join(f"{n}\n" for n in lines))
        counts[split] = len(lines)
    return counts


Evaluator = Callable[..., dict[str, Any]]


def rf_evaluator(train_ds, test_ds, num_classes: int, task: str, seed: int) -> dict[str, Any]:
    """The per-pixel random forest baseline with small settings (fast on a CPU)."""
    from spectralearth.downstream.baselines import random_forest_baseline

    return random_forest_baseline(
        train_ds, test_ds, num_classes, seed=seed, task=task, n_estimators=50, max_pixels=20_000
    )


def split_gap(
    root: str | os.PathLike,
    name: str | None = None,
    blocked: str = "block",
    evaluator: Evaluator = rf_evaluator,
    seeds: Sequence[int] = (0,),
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Score ``evaluator`` on the ``random`` and the ``blocked`` split of a built dataset.

    ``root`` is a dataset built by :func:`spectralearth.downstream.build.build_dataset`
    (``splits/random/`` and ``splits/<blocked>/`` beside ``splits/``); ``name`` its
    registered name (default: the folder name). Each scheme trains on its train split and
    scores its test split; band statistics come from each scheme's own train split.
    Returns one row per (metric, seed) with ``random``, ``blocked`` and ``gap`` (random
    minus blocked: > 0 means the random split flatters the result) and the patch counts.
    """
    from spectralearth.downstream.datasets.base import ReleasedDataset

    root = Path(root)
    name = name or root.name
    rows = []
    for seed in seeds:
        scores, sizes = {}, {}
        for scheme in ("random", blocked):
            split_dir = root / "splits" / scheme
            train = ReleasedDataset(root, name, "train", split_dir=split_dir)
            test = ReleasedDataset(root, name, "test", stats=train.stats, split_dir=split_dir)
            scores[scheme] = evaluator(train, test, train.num_classes, train.task, seed)
            sizes[scheme] = (len(train), len(test))
        keys = metrics or [
            k
            for k, v in scores["random"].items()
            if isinstance(v, float) and k in scores[blocked] and k not in ("seconds", "peak_mem_mb")
        ]
        for k in keys:
            a, b = float(scores["random"][k]), float(scores[blocked][k])
            rows.append(
                {
                    "dataset": name,
                    "blocked_scheme": blocked,
                    "metric": k,
                    "seed": seed,
                    "random": a,
                    "blocked": b,
                    "gap": a - b,
                    "random_train_test": sizes["random"],
                    "blocked_train_test": sizes[blocked],
                }
            )
    return pd.DataFrame(rows)
