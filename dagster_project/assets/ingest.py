"""Ingest: the scene catalogue of the archive; registers one partition per ok product."""

import dagster as dg

from dagster_project.metadata import png_markdown
from dagster_project.partitions import scenes_partitions
from dagster_project.resources import SpectralearthSettings
from spectralearth import pipeline
from spectralearth.catalog import ok_scenes
from spectralearth.plots import catalog_table_markdown


@dg.asset(
    group_name="ingest",
    description="GeoParquet catalogue of the L2A archive (one row per product).",
)
def scene_catalog(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings
) -> dg.MaterializeResult:
    s = settings.load()
    result = pipeline.catalog(s)
    cat = result.catalog
    scenes = ok_scenes(cat)
    new = [
        k for k in scenes if not context.instance.has_dynamic_partition(scenes_partitions.name, k)
    ]
    if new:
        context.instance.add_dynamic_partitions(scenes_partitions.name, new)
    for r in result.rejected.itertuples():
        context.log.warning(f"rejected product {r.scene}: {r.reason}")
    if result.n_ok == 0:
        context.log.warning(f"no readable product in {s.paths.archive}")
    png = s.paths.catalog.parent / "coverage.png"
    return dg.MaterializeResult(
        metadata={
            "products": len(cat),
            "ok": result.n_ok,
            "rejected": int((cat["status"] == "rejected").sum()),
            "new_partitions": len(new),
            "path": dg.MetadataValue.path(str(result.path)),
            "superseded": int((cat["status"] == "superseded").sum()),
            "stac": dg.MetadataValue.path(str(s.paths.catalog.parent / "stac" / "collection.json")),
            "coverage_map": dg.MetadataValue.md(png_markdown(png, "scene coverage")),
            "quicklooks": dg.MetadataValue.md(
                png_markdown(png.with_name("quicklooks.png"), "scene quicklooks")
            ),
            "scenes": dg.MetadataValue.md(catalog_table_markdown(cat)),
        }
    )
