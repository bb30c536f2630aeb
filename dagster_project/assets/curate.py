"""Curate: per-scene patches (one partition per product), the index, shards and statistics."""

import dagster as dg

from dagster_project.assets.ingest import scene_catalog
from dagster_project.metadata import png_markdown
from dagster_project.partitions import scenes_partitions
from dagster_project.resources import SpectralearthSettings
from spectralearth import pipeline
from spectralearth.enmap.archive import find_product_path


@dg.asset(
    group_name="curate",
    partitions_def=scenes_partitions,
    deps=[scene_catalog],
    description="202-band 128x128 patches of one product, after nodata/cloud/snow filters.",
)
def curated_patches(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings
) -> dg.MaterializeResult:
    s = settings.load()
    product = find_product_path(s.paths.archive, context.partition_key)
    res = pipeline.curate_scene(s, product)
    context.log.info(f"{res.scene}: kept {res.kept}/{res.windows} windows; rejected {res.rejected}")
    return dg.MaterializeResult(
        metadata={
            "scene_id": res.scene_id,
            "windows": res.windows,
            "kept": res.kept,
            **{f"rejected_{k}": v for k, v in sorted(res.rejected.items())},
        }
    )


@dg.asset(
    group_name="curate",
    deps=[curated_patches],
    description="GeoParquet index of all patches with splits.",
)
def patch_index(settings: SpectralearthSettings) -> dg.MaterializeResult:
    s = settings.load()
    index = pipeline.patch_index(s)
    per_split = index["split"].value_counts().to_dict() if len(index) else {}
    multi = index.groupby("location_id")["scene_id"].nunique() if len(index) else None
    return dg.MaterializeResult(
        metadata={
            "patches": len(index),
            "locations": int(index["location_id"].nunique()) if len(index) else 0,
            "multitemporal_share": float((multi > 1).mean()) if multi is not None else 0.0,
            **{f"split_{k}": int(v) for k, v in per_split.items()},
            "path": dg.MetadataValue.path(str(s.paths.patches / "index.parquet")),
        }
    )


@dg.asset(
    group_name="curate",
    deps=[patch_index],
    description="Memory-mappable int16 training shards + manifest.",
)
def training_shards(settings: SpectralearthSettings) -> dg.MaterializeResult:
    s = settings.load()
    manifest = pipeline.training_shards(s)
    return dg.MaterializeResult(
        metadata={
            "patches": len(manifest),
            "shards": int(manifest["shard"].nunique()) if len(manifest) else 0,
        }
    )


@dg.asset(
    group_name="curate",
    deps=[training_shards],
    description="Per-band mean/std of the training patches.",
)
def band_statistics(settings: SpectralearthSettings) -> dg.MaterializeResult:
    s = settings.load()
    stats = pipeline.band_statistics(s)
    return dg.MaterializeResult(
        metadata={
            "n_patches": stats["n_patches"],
            "split": stats["split"],
            "path": dg.MetadataValue.path(str(s.paths.stats)),
        }
    )


@dg.asset(
    group_name="curate",
    deps=[patch_index],
    description="Patches, locations (map), multitemporal share, patches per scene, RGB quicklooks.",
)
def dataset_summary(settings: SpectralearthSettings) -> dg.MaterializeResult:
    s = settings.load()
    info = pipeline.dataset_summary(s)
    out = s.paths.data_dir / "summary"
    return dg.MaterializeResult(
        metadata={
            **info,
            "locations": dg.MetadataValue.md(png_markdown(out / "locations.png", "locations")),
            "quicklooks": dg.MetadataValue.md(
                png_markdown(out / "quicklooks.png", "RGB quicklooks")
            ),
        }
    )
