"""The pipeline's stages, one function each: the CLI, the Dagster assets and the DVC stages
(through the CLI) all call these, so each stage has exactly one implementation."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from spectralearth.config import Settings


def synth_archive(
    settings: Settings, out: Path | None = None, progress: bool = False
) -> list[Path]:
    from spectralearth.synth import write_archive

    s = settings.synth
    return write_archive(
        out or settings.paths.archive,
        scenes=s.scenes,
        size=s.size,
        seed=s.seed,
        revisit_fraction=s.revisit_fraction,
        progress=progress,
    )


def catalog(settings: Settings, archive: Path | None = None, out: Path | None = None):
    """Catalogue GeoParquet, with a STAC Collection and a coverage map beside it.

    Rejected products are rows with their reason; only an unreadable archive folder raises.
    """
    from spectralearth.catalog import build_catalog
    from spectralearth.plots import coverage_map
    from spectralearth.stac import write_stac

    out = out or settings.paths.catalog
    result = build_catalog(archive or settings.paths.archive, out)
    write_stac(result.catalog, out.parent / "stac")
    coverage_map(result.catalog, out.parent / "coverage.png")
    return result


def scenes_to_curate(settings: Settings, catalog_path: Path | None = None) -> list[Path]:
    """Product folders with status ok in the catalogue."""
    from spectralearth.catalog import read_catalog

    cat = read_catalog(catalog_path or settings.paths.catalog)
    return [Path(p) for p in cat.loc[cat["status"] == "ok"].sort_values("scene")["path"]]


def curate_scene(settings: Settings, product_dir: Path, patches_root: Path | None = None):
    from spectralearth.patches.curate import curate_scene as _curate

    return _curate(product_dir, patches_root or settings.paths.patches, settings.curate)


def patch_index(settings: Settings, patches_root: Path | None = None):
    from spectralearth.patches.store import build_index

    c = settings.curate
    return build_index(patches_root or settings.paths.patches, c.val_frac, c.test_frac)


def training_shards(settings: Settings, patches_root: Path | None = None):
    from spectralearth.patches.store import build_shards

    return build_shards(patches_root or settings.paths.patches)


def curate_archive(
    settings: Settings, products: list[Path], patches_root: Path | None = None, log=print
) -> dict:
    """Curate every product (sorted), then build the index and the shards."""
    from spectralearth.enmap.product import ProductError

    root = patches_root or settings.paths.patches
    reports, failed = [], {}
    for product in sorted(products):
        try:
            res = curate_scene(settings, product, root)
            reports.append(res.as_metadata())
            log(f"{res.scene}: kept {res.kept} of {res.windows} windows, rejected {res.rejected}")
        except ProductError as exc:
            failed[product.name] = exc.reason
            log(f"REJECTED {exc}")
    index = patch_index(settings, root)
    training_shards(settings, root)
    return {
        "scenes": reports,
        "failed": failed,
        "patches": int(len(index)),
        "locations": int(index["location_id"].nunique()) if len(index) else 0,
    }


def dataset_summary(
    settings: Settings, patches_root: Path | None = None, out: Path | None = None
) -> dict:
    """Counts, multitemporal share, a map of the locations and RGB quicklooks of a sample."""
    from spectralearth.io import atomic_write_text
    from spectralearth.patches.store import read_index
    from spectralearth.plots import dataset_summary as _summary
    from spectralearth.plots import locations_map, rgb_quicklooks

    root = patches_root or settings.paths.patches
    out = out or settings.paths.data_dir / "summary"
    index = read_index(root)
    summary = _summary(index)
    rgb_quicklooks(root, index, out / "quicklooks.png")
    locations_map(index, out / "locations.png")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def band_statistics(
    settings: Settings, patches_root: Path | None = None, out: Path | None = None
) -> dict:
    from spectralearth.patches.store import compute_band_stats

    return compute_band_stats(patches_root or settings.paths.patches, out or settings.paths.stats)


def validate(settings: Settings, patches_root: Path | None = None, report: Path | None = None):
    """Every data-quality gate: index, every patch file, warnings. Reports in <validation>/,
    GX Data Docs in <validation>/data_docs/index.html. Returns {suite: ValidationReport}."""
    from spectralearth.validation import quality_gates

    return quality_gates(settings, patches_root, report)


def checkpoint_dir(settings: Settings) -> Path:
    p = settings.pretrain
    return settings.paths.models / f"{p.method}-{p.backbone}"


def pretrain(
    settings: Settings,
    patches_root: Path | None = None,
    out: Path | None = None,
    stats_path: Path | None = None,
    resume: bool = False,
) -> dict:
    """Self-supervised pretraining, tracked in MLflow and registered as a model version.

    ``out`` defaults to ``checkpoint_dir(settings)``; ``resume`` continues from its
    ``checkpoints/last.ckpt``."""
    from spectralearth import tracking
    from spectralearth.ssl.train import pretrain as _pretrain

    paths, p = settings.paths, settings.pretrain
    stats = json.loads((stats_path or paths.stats).read_text())
    out = out or checkpoint_dir(settings)
    run_id = tracking.start_run(
        paths,
        settings.mlflow,
        run_name=f"pretrain-{p.method}-{p.backbone}",
        tags={"stage": "pretrain", "profile": p.profile},
    )
    try:
        info = _pretrain(
            p,
            (patches_root or paths.patches) / "shards",
            stats,
            out,
            logger=tracking.lightning_logger(paths, settings.mlflow, run_id),
            resume=resume,
        )
    except BaseException:
        tracking.fail_run(paths, settings.mlflow, run_id)
        raise
    # None settings mean "the method's default": the logger logged the value used (hparams)
    params = {k: v for k, v in vars(p).items() if v is not None}
    reg = tracking.finish_pretraining(
        paths, settings.mlflow, run_id, params=params, run_info=info, checkpoint_dir=out
    )
    run_json = out / "run.json"
    data = json.loads(run_json.read_text())
    data.update(mlflow_run_id=run_id, model_version=reg["model_version"])
    from spectralearth.io import atomic_write_text

    atomic_write_text(run_json, json.dumps(data, indent=1))
    return {**info, **reg, "checkpoint": str(out)}


def downstream_dataset(settings: Settings, patches_root: Path | None = None) -> dict:
    from spectralearth.downstream.datasets.synth_landcover import build_synth_landcover

    root = patches_root or settings.paths.patches
    return build_synth_landcover(
        root / "index.parquet",
        root,
        settings.paths.labels,
        settings.paths.downstream / settings.evaluate.task,
    )


def build_downstream(
    settings: Settings,
    patches_root: Path | None = None,
    out: Path | None = None,
    sources: dict[str, str] | None = None,
    datasets: list[str] | None = None,
    **build_options,
) -> dict[str, dict]:
    """Build downstream datasets in the released layout under ``out`` (default: the
    downstream folder) from curated patches.

    ``sources`` maps a dataset name to a label source: a raster file or folder of tiles,
    or ``PATH:COLUMN`` for polygons (EuroCrops, BD Foret). Without it, all nine (or
    ``datasets``) come from the synthetic sources made from the generator's class maps
    (``spectralearth.downstream.synth_labels``). ``build_options`` (``scheme``, ``seed``,
    ``min_coverage``, ``val_frac``, ``test_frac``, ``block_m``) go to ``build_dataset``.
    Returns each dataset's build report.
    """
    from spectralearth.downstream.build import (
        RasterLabelSource,
        VectorLabelSource,
        build_dataset,
        read_patch_grids,
    )

    root = patches_root or settings.paths.patches
    out = out or settings.paths.downstream
    if not sources:
        from spectralearth.downstream.synth_labels import build_synthetic_downstream

        return build_synthetic_downstream(
            root, settings.paths.labels, out, settings.synth, datasets, **build_options
        )
    grids = read_patch_grids(root)
    reports = {}
    vector_suffixes = (".parquet", ".gpkg", ".shp", ".geojson", ".json", ".fgb")
    for name, spec in sources.items():
        path, _, column = str(spec).rpartition(":")
        if column and Path(path).suffix.lower() in vector_suffixes:
            source = VectorLabelSource(path, column)
        else:
            source = RasterLabelSource(spec)
        reports[name] = build_dataset(name, root, source, out, grids=grids, **build_options)
    return reports


def evaluate(
    settings: Settings,
    model: str | None = None,
    dataset: str | None = None,
    out: Path | None = None,
    **options,
) -> pd.DataFrame:
    """Pretrained vs random-init encoder on the downstream task; CSV + MLflow run.

    With ``model``, ``dataset`` or ``options`` (``protocol``, ``baseline``, ``backbone``,
    ``label_fractions``, ``seeds``, ``first_n``, ``split_dir``, ``allow_band_mismatch``):
    one model (a checkpoint folder or file, a checkpoint name under the models folder, the
    MLflow registered model name, optionally ``@alias`` or ``/version``, or ``random``) on
    one dataset (registered name or folder) under one protocol, written to ``out`` (default
    ``<results>/evaluate-<dataset>-<protocol>.csv``); see ``downstream.run.evaluate_model``.
    """
    from spectralearth import tracking
    from spectralearth.downstream.run import evaluate_checkpoint, write_evaluations

    paths = settings.paths
    if model is not None or dataset is not None or options:
        from spectralearth.downstream.run import evaluate_model

        options.setdefault("backbone", settings.pretrain.backbone)
        rows = evaluate_model(
            resolve_model(settings, model),
            dataset or settings.evaluate.task,
            settings.evaluate,
            downstream_dir=paths.downstream,
            **options,
        )
        name = Path(str(dataset or settings.evaluate.task)).name
        kind = options.get("baseline") or options.get("protocol") or settings.evaluate.protocol
        write_evaluations(rows, out or paths.results / f"evaluate-{name}-{kind}.csv")
        return rows
    ckpt = checkpoint_dir(settings)
    stats = json.loads(paths.stats.read_text())
    rows = evaluate_checkpoint(
        ckpt, paths.downstream / settings.evaluate.task, stats, settings.evaluate
    )
    csv = paths.results / "evaluations.csv"
    write_evaluations(rows, csv)
    run_json = json.loads((ckpt / "run.json").read_text())
    tracking.log_evaluation(paths, settings.mlflow, rows, run_json.get("mlflow_run_id"), csv)
    return rows


def resolve_model(settings: Settings, model: str | None) -> str:
    """``random``, a checkpoint path, a checkpoint folder name under the models folder or
    the MLflow registered model (``name``, ``name@alias``, ``name/version``) -> ``random`` or
    a checkpoint path. ``None`` is the pipeline's own checkpoint."""
    from spectralearth.downstream.run import RANDOM

    if model is None:
        return str(checkpoint_dir(settings))
    if model == RANDOM or Path(model).exists():
        return model
    if (settings.paths.models / model).is_dir():
        return str(settings.paths.models / model)
    if model.split("@")[0].split("/")[0] == settings.mlflow.registered_model:
        from spectralearth import tracking

        return str(tracking.registered_checkpoint(settings.paths, settings.mlflow, model))
    raise FileNotFoundError(
        f"model {model!r}: not 'random', a checkpoint path, a folder in "
        f"{settings.paths.models} or the registered model {settings.mlflow.registered_model!r}"
    )


def results_table(settings: Settings) -> str:
    """The short results table printed at the end of `make run` (read from the run's CSV)."""
    csv = settings.paths.results / "evaluations.csv"
    if not csv.exists():
        return "(no evaluation results yet)"
    df = pd.read_csv(csv)
    pivot = df.pivot_table(index=["dataset", "protocol", "model"], columns="metric", values="value")
    return pivot.round(4).to_string()
