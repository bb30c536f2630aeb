"""Evaluate: a model (checkpoint, baseline) on a downstream dataset under a protocol and a
head, and the gathered results table.

Every evaluation, whether `make run` asks for it, a Dagster partition or a one-off
``spectralearth evaluate --model M --dataset D``, goes through :func:`evaluate`: one CSV and
one trained model per :class:`~spectralearth.layout.EvaluationKey` (checkpoint x dataset x
protocol x head x label fraction) under the results folder it is given, figures, and an
MLflow run. Changing the head or the label fraction never overwrites another one's results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from spectralearth import names
from spectralearth.config import EvaluateSettings, Settings, TrackingSettings
from spectralearth.layout import CheckpointLayout, DataLayout, EvaluationKey, ResultsLayout
from spectralearth.profiling import StageUsage, Usage
from spectralearth.stages.result import Figure, Markdown, StageResult, usage_metadata

RANDOM_MODEL = "random"  # what downstream.run builds from random init
# registered models are downloaded to <data_dir>/mlflow/downloads/<model id>/<checkpoint>
REGISTRY_CACHE = "downloads"


@dataclass(frozen=True)
class EvaluationRequest:
    """What to evaluate. ``model``: a checkpoint folder or file, a folder name under the
    models folder, a registered model (``NAME``, ``NAME@ALIAS``, ``NAME/VERSION``,
    ``models:/NAME@ALIAS``) or a baseline (``random_init``, ``random_forest``; ``random`` is
    random init too)."""

    model: str
    dataset: str
    protocol: str
    head: str
    label_fractions: tuple[float, ...] = (1.0,)
    seeds: tuple[int, ...] = ()
    backbone: str | None = None  # the architecture of random init (default: the pipeline's)
    first_n: int | None = None
    split_dir: str | None = None
    recipe: str | None = None  # an entry of evaluate.recipes (default: evaluate.recipe)

    @property
    def baseline(self) -> str | None:
        if self.model == names.RANDOM_FOREST:
            return names.RANDOM_FOREST
        if self.model in (names.RANDOM_INIT, RANDOM_MODEL):
            return names.RANDOM_INIT
        return None


@dataclass(frozen=True)
class Evaluation(StageResult):
    keys: tuple[EvaluationKey, ...]  # one per label fraction
    csvs: tuple[Path, ...]
    rows: pd.DataFrame = field(repr=False, compare=False)
    trained_model: Path | None
    figures: tuple[tuple[str, Path], ...]  # (kind, png)
    mlflow_run_id: str
    usage: Usage | None = None

    @property
    def test(self) -> pd.DataFrame:
        return self.rows[self.rows["split"] == "test"]

    def metadata(self) -> dict:
        test = self.test
        means = test.groupby(["label_fraction", "metric"])["value"].mean()
        meta: dict = {
            f"test/{metric}" + ("" if frac == 1.0 else f"@{frac:g}"): float(v)
            for (frac, metric), v in means.items()
        }
        meta.update(
            seeds=int(test["seed"].nunique()) if len(test) else 0,
            head=self.keys[0].head,
            rows=self.csvs[-1],
            mlflow_run_id=self.mlflow_run_id,
            **usage_metadata(self.usage),
        )
        if self.trained_model is not None:
            meta["trained_model"] = self.trained_model
        titles = {"confusion": "confusion matrix", "per_class": "per-class scores"}
        for kind, png in self.figures:
            meta[kind] = Figure(png, titles.get(kind, kind))
        return meta

    def summary(self) -> str:
        table = self.test.pivot_table(
            index=["model", "protocol", "head", "label_fraction", "seed"],
            columns="metric",
            values="value",
        )
        where = "\n".join(f"  rows: {p}" for p in self.csvs)
        if self.trained_model is not None:
            where += f"\n  trained model: {self.trained_model}"
        return f"{table.round(4).to_string()}\n{where}"


def default_model_spec(settings: Settings) -> str:
    return str(settings.layout.checkpoint(settings.checkpoint_name()).root)


def default_requests(settings: Settings) -> list[EvaluationRequest]:
    """What `make run`, ``spectralearth evaluate`` and the Dagster default partitions run:
    the pipeline's checkpoint and the ``evaluate.baselines`` on ``evaluate.task``."""
    e = settings.evaluate
    out = []
    for model in (settings.checkpoint_name(), *e.baselines):
        forest = model == names.RANDOM_FOREST
        out.append(
            EvaluationRequest(
                model=model,
                dataset=e.task,
                protocol=names.NO_PROTOCOL if forest else e.protocol,
                head=names.NO_HEAD if forest else e.head,
                label_fractions=e.label_fractions,
                seeds=e.seeds,
            )
        )
    return out


class ModelNotFoundError(FileNotFoundError):
    """A model spec that names nothing the project can load."""


def resolve_model(spec: str, layout: DataLayout, tracking: TrackingSettings) -> str:
    """A model spec -> ``random`` or a local checkpoint path (see :class:`EvaluationRequest`)."""
    if spec in (RANDOM_MODEL, names.RANDOM_INIT):
        return RANDOM_MODEL
    if Path(spec).exists():
        return spec
    if (layout.models / spec).is_dir():
        return str(layout.models / spec)
    registered = spec.removeprefix("models:/")
    if registered.split("@")[0].split("/")[0] == tracking.registered_model or spec.startswith(
        "models:/"
    ):
        from spectralearth import tracking as mlf

        # downloaded from the artifact store (local or a server's) once per LoggedModel
        cache = layout.mlflow_dir / REGISTRY_CACHE
        return str(mlf.registered_checkpoint(tracking, spec, cache).path)
    raise ModelNotFoundError(
        f"model {spec!r}: not 'random', a checkpoint path, a folder in {layout.models} or the "
        f"registered model {tracking.registered_model!r} (NAME, NAME@ALIAS, NAME/VERSION)"
    )


def checkpoint_name(resolved: str, request: EvaluationRequest) -> str:
    """The name an evaluation's results go under: the baseline's, else the checkpoint's."""
    if request.baseline:
        return request.baseline
    path = Path(resolved)
    if path.is_file():
        return (
            path.parent.name
            if path.name == CheckpointLayout(path.parent).weights.name
            else path.stem
        )
    return path.name


def evaluate(
    request: EvaluationRequest,
    settings: EvaluateSettings,
    layout: DataLayout,
    results: ResultsLayout,
    tracking: TrackingSettings,
    *,
    default_backbone: str,
) -> Evaluation:
    """Run ``request``; write its rows, trained model and figures under ``results`` and log an
    MLflow run (linked to the checkpoint's pretraining run when it has one)."""
    from spectralearth import experiments
    from spectralearth import tracking as mlf
    from spectralearth.downstream.datasets.registry import resolve as resolve_dataset
    from spectralearth.downstream.run import evaluate_model, write_evaluations

    baseline = request.baseline
    if baseline == names.RANDOM_FOREST and request.protocol != names.NO_PROTOCOL:
        raise ValueError(
            f"{names.RANDOM_FOREST} has no protocol: run it under {names.NO_PROTOCOL!r}"
        )
    model = RANDOM_MODEL if baseline else resolve_model(request.model, layout, tracking)
    who = checkpoint_name(model, request)
    fractions = tuple(sorted(set(request.label_fractions)))
    recipe = request.recipe or settings.recipe
    keys = tuple(
        EvaluationKey(
            who,
            request.dataset,
            request.protocol,
            request.head,
            f,
            "none" if baseline == names.RANDOM_FOREST else recipe,
        )
        for f in fractions
    )
    top = keys[-1]
    pretraining: dict = {}
    if not baseline:
        run_file = CheckpointLayout(Path(model) if Path(model).is_dir() else Path(model).parent).run
        if run_file.is_file():
            pretraining = json.loads(run_file.read_text())
    mlf.check_store(tracking)
    forest = baseline == names.RANDOM_FOREST
    with StageUsage() as usage:
        outcome = evaluate_model(
            model,
            request.dataset,
            settings,
            None if forest else request.protocol,
            head=None if forest else request.head,
            recipe=recipe,
            baseline=names.RANDOM_FOREST if forest else None,
            backbone=request.backbone or default_backbone,
            label_fractions=fractions,
            seeds=request.seeds or None,
            first_n=request.first_n,
            downstream_dir=layout.downstream,
            split_dir=request.split_dir,
            save_model_dir=None if forest else results.trained_model(top),
        )
    rows = outcome.rows
    csvs = []
    for key in keys:
        part = rows[rows["label_fraction"] == key.label_fraction]
        csvs.append(write_evaluations(part, results.csv(key)))
    figures = _figures(outcome, results, top)
    experiments.write_confusion(outcome, results, top)  # the data of the DVC confusion plot
    if pretraining:
        experiments.record_pretraining(results, who, pretraining)
    trained = results.trained_model(top)
    trained = trained if (trained / "head.json").is_file() else None
    artifacts = [png for _, png in figures]
    if trained is not None:
        artifacts.append(trained / "head.json")
    run_id = mlf.log_evaluation(
        tracking,
        rows[rows["split"] == "test"],
        pretraining.get("mlflow_run_id"),
        csvs[-1],
        run_name=f"evaluate-{top.stem}",
        tags={
            "checkpoint": who,
            "dataset": top.dataset,
            "protocol": top.protocol,
            "head": top.head,
            "label_fractions": ",".join(f"{f:g}" for f in fractions),
            "recipe": top.recipe,
        },
        artifacts=artifacts,
        model_id=pretraining.get("mlflow_model_id"),
        dataset_dir=resolve_dataset(
            request.dataset, layout.downstream, split_dir=request.split_dir
        ).root,
    )
    return Evaluation(keys, tuple(csvs), rows, trained, tuple(figures), run_id, usage.result)


def _figures(outcome, results: ResultsLayout, key: EvaluationKey):
    """Confusion matrix (summed over seeds) and per-class IoU or F1 (mean over seeds) at the
    largest label fraction (``outcome``: downstream.run.EvaluationOutcome)."""
    import numpy as np

    from spectralearth.plots import confusion_matrix_plot, per_class_bars

    details = outcome.details or {}
    if not details:
        return []
    top = max(k[2] for k in details)
    found = [r for k, r in details.items() if k[2] == top]
    classes = list(outcome.classes or [])
    figures = []
    if all("confusion_matrix" in r for r in found):
        cm = np.sum([np.asarray(r["confusion_matrix"]) for r in found], axis=0)
        png = confusion_matrix_plot(cm, classes, results.confusion_png(key), key.title)
        figures.append(("confusion", Path(png)))
    metric = "per_class_iou" if all("per_class_iou" in r for r in found) else "per_class_f1"
    if all(metric in r for r in found):
        scores = np.nanmean([np.asarray(r[metric], dtype=float) for r in found], axis=0)
        ylabel = "IoU" if metric == "per_class_iou" else "F1"
        png = per_class_bars(
            {"test": scores.tolist()}, classes, results.per_class_png(key), key.title, ylabel
        )
        figures.append(("per_class", Path(png)))
    return figures


@dataclass(frozen=True)
class BenchmarkResults(StageResult):
    evaluations: int
    rows: pd.DataFrame = field(repr=False, compare=False)
    summary_table: pd.DataFrame = field(repr=False, compare=False)
    markdown: str = field(repr=False)
    csv: Path = Path()
    report: Path = Path()
    all_rows: Path = Path()
    metrics: Path = Path()  # metrics.json: what `dvc metrics show` and `dvc exp show` list

    def metadata(self) -> dict:
        return {
            "evaluations": self.evaluations,
            "rows": len(self.rows),
            "report": Markdown(self.markdown),
            "table": self.csv,
            "all_rows": self.all_rows,
            "metrics": self.metrics,
        }

    def summary(self) -> str:
        return self.markdown


def benchmark_results(results: ResultsLayout) -> BenchmarkResults:
    """Gather every finished evaluation under ``results`` into ``evaluations.csv`` (all rows),
    ``benchmark.csv`` (mean/std over seeds, wall time and peak memory per protocol) and
    ``report.md`` (baselines side by side)."""
    from spectralearth.downstream.report import report_markdown, summarize
    from spectralearth.downstream.run import EVALUATION_COLUMNS, write_evaluations
    from spectralearth.experiments import write_experiment_files
    from spectralearth.io import atomic_path, atomic_write_text

    files = results.evaluation_csvs()
    frames = [pd.read_csv(f) for f in files]
    rows = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=list(EVALUATION_COLUMNS))
    )
    write_evaluations(rows, results.all_rows)
    table = summarize(rows)
    with atomic_path(results.benchmark) as tmp:
        table.to_csv(tmp, index=False)
    markdown = report_markdown(table)
    atomic_write_text(results.report, markdown)
    dvc_files = write_experiment_files(results, table)  # dvc.yaml metrics: and plots:
    return BenchmarkResults(
        evaluations=len(files),
        rows=rows,
        summary_table=table,
        markdown=markdown,
        csv=results.benchmark,
        report=results.report,
        all_rows=results.all_rows,
        metrics=dvc_files.metrics,
    )


def results_table(results: ResultsLayout) -> str:
    """The results table printed at the end of `make run` (from ``evaluations.csv``):
    baselines side by side, mean ± std over seeds where several ran."""
    from spectralearth.downstream.report import results_markdown, summarize

    if not results.all_rows.exists():
        return "(no evaluation results yet)"
    return results_markdown(summarize(pd.read_csv(results.all_rows)))
