"""Curate: per-scene patches (one partition per product), the index (the patch files are the
one training copy: no separate store asset), band statistics and the dataset summary; the
index of a released tree."""

from pathlib import Path

import dagster as dg

from dagster_project.assets.ingest import scene_catalog
from dagster_project.metadata import materialized
from dagster_project.partitions import scenes_partitions
from dagster_project.pools import CURATE
from dagster_project.resources import SpectralearthSettings
from spectralearth.enmap.archive import find_product_path
from spectralearth.stages import curate, statistics
from spectralearth.stages.ingest import ok_scene_keys


@dg.asset(
    group_name="curate",
    partitions_def=scenes_partitions,
    deps=[scene_catalog],
    pool=CURATE,
    description="202-band 128x128 patches of one product, after nodata/cloud/snow filters.",
)
def curated_patches(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings
) -> dg.MaterializeResult:
    s = settings.load()
    product = find_product_path(s.layout.archive, context.partition_key)
    result = curate.curate_scene(
        product, s.layout.patches, s.curate, ok_scene_keys(s.layout.catalog)
    )
    context.log.info(result.summary())
    return materialized(result)


@dg.asset(
    group_name="curate",
    deps=[curated_patches],
    description="GeoParquet index of all patches with location-disjoint splits.",
)
def patch_index(settings: SpectralearthSettings) -> dg.MaterializeResult:
    s = settings.load()
    return materialized(curate.patch_index(s.layout.patches, s.curate))


class ReleaseConfig(dg.Config):
    """Launchpad options of ``release_index``: the released tree (empty: the data folder's
    curated folder, e.g. a downloaded release placed or linked there) and whether unreadable
    files are left out (listed in the metadata) instead of failing the run."""

    root: str = ""
    skip_unreadable: bool = False


@dg.asset(
    group_name="release",
    description="The patch index of a released SpectralEarth tree (enmap/<location>/<scene>.tif), "
    "so pretraining reads the downloaded dataset without curating. Materialize it by hand "
    "(launchpad: root); not automated.",
)
def release_index(settings: SpectralearthSettings, config: ReleaseConfig) -> dg.MaterializeResult:
    s = settings.load()
    root = Path(config.root) if config.root else s.layout.patches
    return materialized(curate.release_index(root, s.curate, config.skip_unreadable))


@dg.asset(
    group_name="curate",
    deps=[patch_index],
    description="Per-band mean/std of the training patches (in the curated folder).",
)
def band_statistics(settings: SpectralearthSettings) -> dg.MaterializeResult:
    return materialized(statistics.band_statistics(settings.load().layout.patches))


@dg.asset(
    group_name="curate",
    deps=[patch_index],
    description="Patches, locations (map), multitemporal share, patches per scene, RGB quicklooks.",
)
def dataset_summary(settings: SpectralearthSettings) -> dg.MaterializeResult:
    s = settings.load()
    return materialized(curate.dataset_summary(s.layout.patches, s.layout.summary))
