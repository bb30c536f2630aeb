"""Idempotency through Dagster: materializing a scene partition twice gives identical files
and no duplicate index rows; a newer processing of the same datatake replaces the older
one's patches instead of adding to them."""

from __future__ import annotations

import shutil

import dagster as dg

from spectralearth.config import load_settings
from spectralearth.patches.store import build_index


def _materialize(instance, resources, selection, partition=None):
    from dagster_project.definitions import defs

    res = dg.materialize(
        list(defs.assets) + list(defs.asset_checks),
        instance=instance,
        resources=resources,
        selection=selection,
        partition_key=partition,
    )
    assert res.success


def _files(root):
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted((root / "enmap").rglob("*.tif"))
        if not p.name.startswith(".")
    }


def test_same_partition_twice_and_a_reprocessing(env, archive_copy):
    instance, resources, params = env
    _materialize(instance, resources, ["scene_catalog"])
    keys = sorted(instance.get_dynamic_partitions("scenes"))
    root = load_settings(params).layout.patches
    victim = next(k for k in keys if _kept(instance, resources, k, root))

    once = _files(root)
    _materialize(instance, resources, ["curated_patches"], victim)
    assert _files(root) == once  # the same files, byte for byte
    index = build_index(root, 0.2, 0.2)
    assert not index["patch_id"].duplicated().any() and len(index) == len(once)

    # a newer processing of the same datatake: its patches replace the older ones
    newer = archive_copy / (victim[:-16] + "29991231T000000Z")
    shutil.copytree(archive_copy / victim, newer)
    for f in newer.iterdir():
        f.rename(newer / f.name.replace(victim, newer.name))
    _materialize(instance, resources, ["scene_catalog"])
    _materialize(instance, resources, ["curated_patches"], newer.name)
    index = build_index(root, 0.2, 0.2)
    assert set(index["product"]) == {newer.name}
    assert len(index) == len(once) and not index["patch_id"].duplicated().any()
    assert len(_files(root)) == len(once)  # replaced, not added


def _kept(instance, resources, key, root) -> bool:
    _materialize(instance, resources, ["curated_patches"], key)
    return bool(_files(root))
