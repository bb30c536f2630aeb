"""The pipeline's stages, one function each: the CLI, the Dagster assets and the DVC stages
(through the CLI) all call these, so each stage has exactly one implementation."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from spectralearth.config import Settings


def synth_archive(
    settings: Settings,
    out: Path | None = None,
    progress: bool = False,
    labels: Path | None = None,
) -> list[Path]:
    """The synthetic archive in ``out`` and its class maps in ``labels`` (defaults: the
    settings' archive and labels folders; nothing is written anywhere else)."""
    from spectralearth.synth import write_archive

    s = settings.synth
    return write_archive(
        out or settings.paths.archive,
        labels or settings.paths.labels,
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
    from spectralearth.plots import coverage_map, scene_quicklooks
    from spectralearth.stac import write_stac

    out = out or settings.paths.catalog
    result = build_catalog(
        archive or settings.paths.archive, out, missing_masks=settings.curate.missing_masks
    )
    write_stac(result.catalog, out.parent / "stac")
    coverage_map(result.catalog, out.parent / "coverage.png")
    scene_quicklooks(result.catalog, out.parent / "quicklooks.png")
    return result


def scenes_to_curate(settings: Settings, catalog_path: Path | None = None) -> list[Path]:
    """Product folders with status ok in the catalogue."""
    from spectralearth.catalog import read_catalog

    cat = read_catalog(catalog_path or settings.paths.catalog)
    return [Path(p) for p in cat.loc[cat["status"] == "ok"].sort_values("scene")["path"]]


def catalog_scene_keys(settings: Settings, catalog_path: Path | None = None) -> list[str]:
    """Scene keys of the catalogue's ok products (what scene ids are registered from)."""
    from spectralearth.catalog import read_catalog

    path = catalog_path or settings.paths.catalog
    if not Path(path).is_file():
        return []
    cat = read_catalog(path)
    return sorted(set(cat.loc[cat["status"] == "ok", "scene_key"].astype(str)))


def curate_scene(
    settings: Settings,
    product_dir: Path,
    patches_root: Path | None = None,
    scene_keys: list[str] | None = None,
):
    """One scene's patches; scene ids registered from ``scene_keys`` (default: the
    catalogue's ok scenes), so they do not depend on the order partitions run in."""
    from spectralearth.patches.curate import curate_scene as _curate

    keys = catalog_scene_keys(settings) if scene_keys is None else scene_keys
    return _curate(product_dir, patches_root or settings.paths.patches, settings.curate, keys)


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
    from spectralearth.enmap.scene import ProductError
    from spectralearth.patches.curate import scene_key_for

    root = patches_root or settings.paths.patches
    keys = sorted({scene_key_for(p) for p in products})  # ids in key order, not curation order
    reports, failed = [], {}
    from tqdm import tqdm

    # a bar on an interactive terminal only (disable=None); the log lines stay
    for product in tqdm(sorted(products), desc="curate", unit="scene", disable=None):
        try:
            res = curate_scene(settings, product, root, keys)
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
    dagster_run_id: str | None = None,
) -> dict:
    """Self-supervised pretraining, tracked in MLflow and registered as a model version.

    ``out`` defaults to ``checkpoint_dir(settings)``; ``resume`` continues from its
    ``checkpoints/last.ckpt``. The run and the model versions carry the data version (md5s
    of the patch index and shard manifest), the git commit and, from Dagster, its run id."""
    from spectralearth import tracking
    from spectralearth.ssl.train import pretrain as _pretrain

    paths, p = settings.paths, settings.pretrain
    stats = json.loads((stats_path or paths.stats).read_text())
    out = out or checkpoint_dir(settings)
    lineage = {
        "data_version": tracking.data_version(patches_root or paths.patches),
        "git_commit": tracking.git_commit(),
        "dagster_run_id": dagster_run_id or "none",
    }
    run_id = tracking.start_run(
        paths,
        settings.mlflow,
        run_name=f"pretrain-{p.method}-{p.backbone}",
        tags={"stage": "pretrain", "profile": p.profile, **lineage},
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
    from spectralearth.plots import loss_curve

    loss_curve(info.get("loss_history") or [], out / "loss.png", title=f"{p.method} {p.backbone}")
    reg = tracking.finish_pretraining(
        paths,
        settings.mlflow,
        run_id,
        params=params,
        run_info=info,
        checkpoint_dir=out,
        lineage=lineage,
    )
    run_json = out / "run.json"
    data = json.loads(run_json.read_text())
    data.update(mlflow_run_id=run_id, model_version=reg["model_version"])
    from spectralearth.io import atomic_write_text

    atomic_write_text(run_json, json.dumps(data, indent=1))
    return {**info, **reg, "checkpoint": str(out)}


def downstream_dataset(settings: Settings, patches_root: Path | None = None) -> dict:
    from spectralearth.downstream.datasets.synth_landcover import (
        build_synth_landcover,
        class_mean_spectra,
    )
    from spectralearth.plots import class_spectra

    root = patches_root or settings.paths.patches
    out = settings.paths.downstream / settings.evaluate.task
    info = build_synth_landcover(root / "index.parquet", root, settings.paths.labels, out)
    if info["patches"].get("train"):
        means, wavelengths = class_mean_spectra(out)
        info["class_spectra_png"] = str(
            class_spectra(means, wavelengths, out / "class_spectra.png", f"{out.name}: train")
        )
    return info


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
    """Without arguments (the pipeline stage): :func:`default_evaluations` (the checkpoint
    and the baselines on the task), each through :func:`evaluate_one`, then
    :func:`benchmark_results`; returns every finished evaluation's rows.

    With ``model``, ``dataset`` or ``options`` (``protocol``, ``head``, ``baseline``, ``backbone``,
    ``label_fractions``, ``seeds``, ``first_n``, ``split_dir``, ``allow_band_mismatch``):
    one model (a checkpoint folder or file, a checkpoint name under the models folder, the
    MLflow registered model name, optionally ``@alias`` or ``/version``, or ``random``) on
    one dataset (registered name or folder) under one protocol, written to ``out`` (default
    ``<results>/evaluate-<dataset>-<protocol>.csv``), the trained model to
    ``<results>/heads/<model>-<dataset>-<protocol>/``; see ``downstream.run.evaluate_model``.
    """
    from spectralearth.downstream.run import write_evaluations

    paths = settings.paths
    if model is not None or dataset is not None or options:
        from spectralearth.downstream.run import evaluate_model

        options.setdefault("backbone", settings.pretrain.backbone)
        resolved = resolve_model(settings, model)
        name = Path(str(dataset or settings.evaluate.task)).name
        kind = options.get("baseline") or options.get("protocol") or settings.evaluate.protocol
        head = options.get("head") or settings.evaluate.head
        if not options.get("baseline") and head != "linear":
            kind = f"{kind}-{head}"  # beside the linear probe's results, not over them
        if not options.get("baseline"):
            who = RANDOM_INIT if resolved == "random" else Path(resolved).name
            who = who[: -len(".safetensors")] if who.endswith(".safetensors") else who
            if who == "model":
                who = Path(resolved).parent.name
            options.setdefault("save_model_dir", paths.results / "heads" / f"{who}-{name}-{kind}")
        rows = evaluate_model(
            resolved,
            dataset or settings.evaluate.task,
            settings.evaluate,
            downstream_dir=paths.downstream,
            **options,
        )
        write_evaluations(rows, out or paths.results / f"evaluate-{name}-{kind}.csv")
        return rows
    for checkpoint, name, protocol in default_evaluations(settings):
        evaluate_one(settings, checkpoint, name, protocol)
    return benchmark_results(settings)["rows"]


RANDOM_INIT = "random_init"
RANDOM_FOREST = "random_forest"
RF_PROTOCOL = "frozen"  # the random forest has no protocol: it runs under this key only


def default_evaluations(settings: Settings) -> list[tuple[str, str, str]]:
    """(checkpoint, dataset, protocol) run by `make run` and `spectralearth evaluate`: the
    pipeline's checkpoint and the baselines on the task under the default protocol."""
    e = settings.evaluate
    models = [checkpoint_dir(settings).name, *e.baselines]
    return [(m, e.task, RF_PROTOCOL if m == RANDOM_FOREST else e.protocol) for m in models]


def evaluation_paths(settings: Settings, checkpoint: str, dataset: str, protocol: str) -> dict:
    """Where one evaluation's rows, trained model and figures go."""
    r = settings.paths.results
    stem = f"{checkpoint}-{Path(dataset).name}-{protocol}"
    return {
        "csv": r / "evaluations" / checkpoint / Path(dataset).name / f"{protocol}.csv",
        "model": r / "heads" / stem,
        "confusion": r / "figures" / f"{stem}-confusion.png",
        "per_class": r / "figures" / f"{stem}-per-class.png",
    }


def evaluate_one(settings: Settings, checkpoint: str, dataset: str, protocol: str) -> dict:
    """One evaluation: ``checkpoint`` (a folder under the models folder, or the baselines
    ``random_init`` / ``random_forest``) on ``dataset`` under ``protocol``, with the seeds of
    ``evaluate.seeds`` (else ``evaluate.seed``). Writes the rows, the trained model (for
    `spectralearth predict`), a confusion matrix and per-class scores as PNGs, and an MLflow
    run with the metrics and those files as artifacts. Returns their paths and the rows."""
    from spectralearth import tracking
    from spectralearth.downstream.run import RANDOM, evaluate_model, write_evaluations

    paths, e = settings.paths, settings.evaluate
    out = evaluation_paths(settings, checkpoint, dataset, protocol)
    baseline, parent = None, None
    if checkpoint == RANDOM_FOREST:
        if protocol != RF_PROTOCOL:
            raise ValueError(f"{RANDOM_FOREST} has no protocol: run it under {RF_PROTOCOL!r}")
        model, baseline = RANDOM, "rf"
    elif checkpoint == RANDOM_INIT:
        model = RANDOM
    else:
        model = resolve_model(settings, checkpoint)
        run_json = Path(model) / "run.json"
        if run_json.is_file():
            parent = json.loads(run_json.read_text()).get("mlflow_run_id")
    rows = evaluate_model(
        model,
        dataset,
        e,
        None if baseline else protocol,
        baseline=baseline,
        backbone=settings.pretrain.backbone,
        seeds=e.seeds or None,
        downstream_dir=paths.downstream,
        save_model_dir=None if baseline else out["model"],
    )
    write_evaluations(rows, out["csv"])
    figures = _evaluation_figures(rows, out, f"{checkpoint} / {Path(dataset).name} / {protocol}")
    artifacts = [out["csv"], *figures.values()]
    if (out["model"] / "head.json").is_file():
        artifacts.append(out["model"] / "head.json")
    run_id = tracking.log_evaluation(
        paths,
        settings.mlflow,
        rows[rows["split"] == "test"],
        parent,
        out["csv"],
        run_name=f"evaluate-{checkpoint}-{Path(dataset).name}-{protocol}",
        tags={
            "checkpoint": checkpoint,
            "dataset": Path(dataset).name,
            "protocol": protocol,
            "head": "none" if baseline else e.head,
        },
        artifacts=[p for p in artifacts if p != out["csv"]],
    )
    return {
        "rows": rows,
        "csv": out["csv"],
        "model": out["model"] if baseline is None else None,
        "figures": figures,
        "run_id": run_id,
    }


def _evaluation_figures(rows: pd.DataFrame, out: dict, title: str) -> dict[str, Path]:
    """Confusion matrix (summed over seeds) and per-class IoU or F1 (mean over seeds) at the
    largest label fraction."""
    import numpy as np

    from spectralearth.plots import confusion_matrix_plot, per_class_bars

    details = rows.attrs.get("details") or {}
    if not details:
        return {}
    top = max(k[2] for k in details)
    results = [r for k, r in details.items() if k[2] == top]
    classes = list(rows.attrs.get("classes") or [])
    figures = {}
    if all("confusion_matrix" in r for r in results):
        cm = np.sum([np.asarray(r["confusion_matrix"]) for r in results], axis=0)
        figures["confusion"] = confusion_matrix_plot(cm, classes, out["confusion"], title)
    key = "per_class_iou" if all("per_class_iou" in r for r in results) else "per_class_f1"
    if all(key in r for r in results):
        scores = np.nanmean([np.asarray(r[key], dtype=float) for r in results], axis=0)
        ylabel = "IoU" if key == "per_class_iou" else "F1"
        figures["per_class"] = per_class_bars(
            {"test": scores.tolist()}, classes, out["per_class"], title, ylabel
        )
    return figures


def benchmark_results(settings: Settings) -> dict:
    """Gather every finished evaluation (``<results>/evaluations/*/*/*.csv``) into
    ``evaluations.csv`` (all rows), ``benchmark.csv`` (mean/std over seeds, wall time and
    peak memory per protocol) and ``report.md`` (baselines side by side)."""
    from spectralearth.downstream.report import report_markdown, summarize
    from spectralearth.downstream.run import EVALUATION_COLUMNS, write_evaluations
    from spectralearth.io import atomic_path, atomic_write_text

    r = settings.paths.results
    files = sorted((r / "evaluations").glob("*/*/*.csv"))
    frames = [pd.read_csv(f) for f in files]
    rows = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=list(EVALUATION_COLUMNS))
    )
    write_evaluations(rows, r / "evaluations.csv")
    summary = summarize(rows)
    with atomic_path(r / "benchmark.csv") as tmp:
        summary.to_csv(tmp, index=False)
    report = report_markdown(summary)
    atomic_write_text(r / "report.md", report)
    return {
        "rows": rows,
        "summary": summary,
        "evaluations": len(files),
        "csv": r / "benchmark.csv",
        "report": r / "report.md",
        "markdown": report,
    }


def default_model(settings: Settings) -> Path:
    """The trained model scene maps use: ``predict.model``, else the pipeline checkpoint's
    model on the task under the default protocol."""
    if settings.predict.model:
        return _model_folder(settings, settings.predict.model)
    ckpt, task, protocol = default_evaluations(settings)[0]
    return evaluation_paths(settings, ckpt, task, protocol)["model"]


def _model_folder(settings: Settings, model: str) -> Path:
    if Path(model).exists():
        return Path(model)
    if (settings.paths.results / "heads" / model).is_dir():
        return settings.paths.results / "heads" / model
    raise FileNotFoundError(
        f"model {model!r}: not a folder, nor a trained model in {settings.paths.results / 'heads'}"
    )


def map_path(settings: Settings, scene: str) -> Path:
    return settings.paths.data_dir / "maps" / f"{scene}.tif"


def predict(
    settings: Settings, model: str | None, scene: str | Path, out: Path | None = None
) -> dict:
    """Map ``scene`` (a path, or a scene name in the archive) with a trained model (a path,
    a folder name under ``<results>/heads``, or None for :func:`default_model`)."""
    from spectralearth.enmap.archive import find_product_path
    from spectralearth.predict import predict_scene

    folder = _model_folder(settings, model) if model else default_model(settings)
    path = Path(scene)
    if not path.exists() and "/" not in str(scene):
        path = find_product_path(settings.paths.archive, str(scene))
    p = settings.predict
    return predict_scene(
        folder,
        path,
        out or map_path(settings, Path(scene).name),
        tile=p.tile,
        overlap=p.overlap,
        mask_layers=p.mask_layers,
    )


def scenes_to_map(settings: Settings, catalog_path: Path | None = None) -> list[str]:
    """Names of the products that get a scene map: those with status ok in the catalogue
    (the scene partitions the Dagster catalogue asset registers)."""
    from spectralearth.catalog import ok_scenes, read_catalog

    return ok_scenes(read_catalog(catalog_path or settings.paths.catalog))


def map_scene(settings: Settings, scene: str) -> dict:
    """The scene map of one product of the archive (Dagster asset ``scene_maps``, one
    partition; `spectralearth maps`): :func:`predict` with the default model to
    :func:`map_path`, and a PNG quicklook beside it. Returns predict's info + ``quicklook``."""
    from spectralearth.enmap.archive import find_product_path
    from spectralearth.plots import class_map_png

    product = find_product_path(settings.paths.archive, scene)
    info = predict(settings, None, product, map_path(settings, scene))
    quicklook = class_map_png(info["out"], Path(info["out"]).with_suffix(".png"))
    return {**info, "quicklook": quicklook}


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
    """The results table printed at the end of `make run` (from the run's evaluations.csv):
    baselines side by side, mean ± std over seeds where several ran."""
    from spectralearth.downstream.report import results_markdown, summarize

    csv = settings.paths.results / "evaluations.csv"
    if not csv.exists():
        return "(no evaluation results yet)"
    return results_markdown(summarize(pd.read_csv(csv)))
