"""Evaluate: the downstream dataset, one evaluation per checkpoint x dataset x protocol, the
gathered results table, and class maps of the scenes."""

import dagster as dg

from dagster_project.assets.curate import patch_index
from dagster_project.assets.ingest import scene_catalog
from dagster_project.assets.pretrain import pretrained_checkpoint
from dagster_project.metadata import png_markdown
from dagster_project.partitions import (
    evaluations_partitions,
    scenes_partitions,
    split_evaluation_key,
)
from dagster_project.resources import SpectralearthSettings
from spectralearth import pipeline


@dg.asset(
    group_name="evaluate",
    deps=[patch_index],
    description="Synthetic land-cover segmentation task in the released-data layout.",
)
def downstream_dataset(settings: SpectralearthSettings) -> dg.MaterializeResult:
    s = settings.load()
    info = pipeline.downstream_dataset(s)
    flat = {k: v for k, v in info.items() if isinstance(v, (int, float, str))}
    if info.get("class_spectra_png"):
        flat["class_spectra"] = dg.MetadataValue.md(
            png_markdown(info["class_spectra_png"], "mean spectrum per class")
        )
    return dg.MaterializeResult(metadata=flat)


@dg.asset(
    group_name="evaluate",
    partitions_def=evaluations_partitions,
    # any pretraining partition may feed an evaluation (the checkpoint dimension names which)
    deps=[
        dg.AssetDep(pretrained_checkpoint, partition_mapping=dg.AllPartitionMapping()),
        downstream_dataset,
    ],
    description="One checkpoint (or baseline) on one dataset under one protocol: test metrics "
    "(mean over seeds), confusion matrix, per-class IoU, the trained model for scene maps.",
)
def downstream_evaluation(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings
) -> dg.MaterializeResult:
    s = settings.load()
    key = context.partition_key.keys_by_dimension
    checkpoint = key["checkpoint"]
    dataset, protocol = split_evaluation_key(key["evaluation"])
    if checkpoint == pipeline.RANDOM_FOREST and protocol != pipeline.RF_PROTOCOL:
        reason = f"the random forest has no protocol: see {dataset}:{pipeline.RF_PROTOCOL}"
        context.log.info(reason)
        return dg.MaterializeResult(metadata={"skipped": reason})
    info = pipeline.evaluate_one(s, checkpoint, dataset, protocol)
    rows = info["rows"]
    test = rows[rows["split"] == "test"]
    means = test.groupby("metric")["value"].mean()
    figures = info["figures"]
    metadata = {
        **{f"test/{m}": float(v) for m, v in means.items()},
        "seeds": int(test["seed"].nunique()),
        "head": ", ".join(sorted(set(test["head"].astype(str)))) if len(test) else "",
        "seconds": float(test.groupby("seed")["seconds"].first().mean()),
        "peak_mem_mb": float(test["peak_mem_mb"].max()),
        "rows": dg.MetadataValue.path(str(info["csv"])),
        "mlflow_run_id": info["run_id"],
    }
    if info["model"] is not None:
        metadata["trained_model"] = dg.MetadataValue.path(str(info["model"]))
    titles = {"confusion": "confusion matrix", "per_class": "per-class scores"}
    for name, path in figures.items():
        metadata[name] = dg.MetadataValue.md(png_markdown(path, titles[name]))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="evaluate",
    deps=[downstream_evaluation],
    description="Every finished evaluation in one table (CSV + Markdown), baselines side by "
    "side, mean ± std over seeds; wall time and peak memory per protocol.",
)
def benchmark_results(settings: SpectralearthSettings) -> dg.MaterializeResult:
    s = settings.load()
    info = pipeline.benchmark_results(s)
    return dg.MaterializeResult(
        metadata={
            "evaluations": info["evaluations"],
            "rows": len(info["rows"]),
            "report": dg.MetadataValue.md(info["markdown"]),
            "table": dg.MetadataValue.path(str(info["csv"])),
            "all_rows": dg.MetadataValue.path(str(s.paths.results / "evaluations.csv")),
        }
    )


@dg.asset(
    group_name="evaluate",
    partitions_def=scenes_partitions,
    deps=[scene_catalog, benchmark_results],
    description="Class map of one scene (sliding-window inference with the default trained "
    "model), uint8 GeoTIFF in the scene's CRS with a colour table; nodata and cloud masked.",
)
def scene_maps(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings
) -> dg.MaterializeResult:
    s = settings.load()
    info = pipeline.map_scene(s, context.partition_key)
    total = info["height"] * info["width"]
    quicklook = info["quicklook"]
    return dg.MaterializeResult(
        metadata={
            "map": dg.MetadataValue.path(info["out"]),
            "quicklook": dg.MetadataValue.md(png_markdown(quicklook, "class map")),
            "model": str(pipeline.default_model(s)),
            "tiles": info["tiles"],
            "masked_share": info["masked_pixels"] / total,
            **{f"share/{k}": v / total for k, v in info["class_pixels"].items()},
            "seconds": float(info["seconds"]),
        }
    )
