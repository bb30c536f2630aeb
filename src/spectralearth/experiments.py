"""What DVC compares between experiments: the metrics summary and the plots' data files.

Written into the results folder the evaluate stage is given (so they are part of its DVC
output and of every ``dvc exp`` commit), declared in dvc.yaml's top-level ``metrics:`` and
``plots:``::

    <results>/metrics.json                      pretraining and test metrics (dvc metrics)
    <results>/pretraining/<checkpoint>.json     what an evaluated checkpoint's run.json says
    <results>/plots/loss/<checkpoint>.csv       step, loss                (dvc plots: linear)
    <results>/plots/label_fraction.csv          series, dataset, model, protocol, head,
                                                label_fraction, <metric>...  (label_fraction)
    <results>/plots/confusion/<stem>.csv        actual, predicted, count   (confusion_counts)

``metrics.json``::

    {"pretrain": {<checkpoint>: {"final_loss": ..., "steps": ...}},
     "test": {<model>: {<dataset>: {<protocol>: {<head>: {"lf<fraction>": {<metric>: mean,
             <metric>_std: std (several seeds only)}}}}}}}

Test-split means over seeds, the keys mirroring the results folder
(``evaluations/<checkpoint>/<dataset>/<protocol>/<head>/lf<fraction>.csv``). Wall times are
left out: they differ on every run and would drown real changes in ``dvc metrics diff``.
The two custom Vega-Lite templates live in ``.dvc/plots/`` (``confusion_counts`` sums a count
column instead of counting rows; ``label_fraction`` draws one line per series).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spectralearth.io import atomic_path, atomic_write_text
from spectralearth.layout import EvaluationKey, ResultsLayout

PRETRAIN_METRICS = ("final_loss", "steps")


@dataclass(frozen=True)
class ExperimentFiles:
    """The files :func:`write_experiment_files` wrote."""

    metrics: Path
    loss_curves: tuple[Path, ...]
    label_fraction: Path


def metrics_file(results: ResultsLayout) -> Path:
    return results.root / "metrics.json"


def pretraining_file(results: ResultsLayout, checkpoint: str) -> Path:
    return results.root / "pretraining" / f"{checkpoint}.json"


def plots_dir(results: ResultsLayout) -> Path:
    return results.root / "plots"


def confusion_file(results: ResultsLayout, key: EvaluationKey) -> Path:
    return plots_dir(results) / "confusion" / f"{key.stem}.csv"


def record_pretraining(results: ResultsLayout, checkpoint: str, run: dict) -> Path:
    """What the evaluated checkpoint's ``run.json`` says of its pretraining (final loss,
    steps, the loss history for the curve, its MLflow ids)."""
    keep = ("method", "backbone", "steps", "final_loss", "loss_history", "mlflow_run_id")
    record = {k: run.get(k) for k in keep}
    record["mlflow_model_id"] = run.get("mlflow_model_id")
    path = pretraining_file(results, checkpoint)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def write_confusion(outcome, results: ResultsLayout, key: EvaluationKey) -> Path | None:
    """The test confusion matrix of ``outcome`` (downstream.run.EvaluationOutcome; summed over
    seeds, at the largest label fraction, as the figure) as ``actual, predicted, count``
    rows; None when the task has none."""
    details = outcome.details or {}
    if not details:
        return None
    top = max(k[2] for k in details)
    found = [r for k, r in details.items() if k[2] == top]
    if not found or not all("confusion_matrix" in r for r in found):
        return None
    cm = np.sum([np.asarray(r["confusion_matrix"]) for r in found], axis=0).astype(np.int64)
    classes = list(outcome.classes or range(len(cm)))
    names = [str(c) for c in classes] + [str(i) for i in range(len(classes), len(cm))]
    frame = pd.DataFrame(
        [
            {"actual": names[i], "predicted": names[j], "count": int(cm[i, j])}
            for i in range(cm.shape[0])
            for j in range(cm.shape[1])
        ]
    )
    path = confusion_file(results, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def _number(value) -> float | int | None:
    """JSON-safe: NaN and infinities (a metric of an empty class) become null."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _label(fraction: float) -> str:
    return f"lf{float(fraction):g}"


def metrics_summary(table: pd.DataFrame, pretraining: dict[str, dict]) -> dict:
    """``metrics.json`` from :func:`spectralearth.downstream.report.summarize`'s table and
    the pretraining records of the checkpoints it names."""
    test: dict = {}
    for r in table.itertuples():
        leaf = (
            test.setdefault(r.model, {})
            .setdefault(r.dataset, {})
            .setdefault(r.protocol, {})
            .setdefault(r.head, {})
            .setdefault(_label(r.label_fraction), {})
        )
        leaf[r.metric] = _number(r.mean)
        if r.n_seeds > 1:
            leaf[f"{r.metric}_std"] = _number(r.std)
    pretrain = {
        name: {k: _number(record.get(k)) for k in PRETRAIN_METRICS}
        for name, record in sorted(pretraining.items())
        if name in test
    }
    return {"pretrain": pretrain, "test": test}


def _series(r) -> str:
    where = r.protocol if r.head in ("none", "linear") else f"{r.protocol}, {r.head}"
    who = r.model if r.protocol == "none" else f"{r.model} ({where})"
    return f"{r.dataset}: {who}"


def write_experiment_files(results: ResultsLayout, table: pd.DataFrame) -> ExperimentFiles:
    """``metrics.json``, the loss curves and the metric-per-label-fraction table of every
    evaluation gathered in ``table`` (``summarize``'s output)."""
    pretraining = {}
    for path in sorted((results.root / "pretraining").glob("*.json")):
        pretraining[path.stem] = json.loads(path.read_text())
    summary = metrics_summary(table, pretraining)
    metrics = metrics_file(results)
    atomic_write_text(metrics, json.dumps(summary, indent=2, sort_keys=True) + "\n")

    curves = []
    for name in summary["pretrain"]:
        history = pretraining[name].get("loss_history") or []
        path = plots_dir(results) / "loss" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            pd.DataFrame({"step": range(1, len(history) + 1), "loss": history}).to_csv(
                tmp, index=False
            )
        curves.append(path)

    if len(table):
        wide = table.pivot_table(
            index=["dataset", "model", "protocol", "head", "label_fraction"],
            columns="metric",
            values="mean",
        ).reset_index()
        wide.insert(0, "series", [_series(r) for r in wide.itertuples()])
    else:
        wide = pd.DataFrame(
            columns=["series", "dataset", "model", "protocol", "head", "label_fraction"]
        )
    fractions = plots_dir(results) / "label_fraction.csv"
    fractions.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(fractions) as tmp:
        wide.to_csv(tmp, index=False)
    return ExperimentFiles(metrics=metrics, loss_curves=tuple(curves), label_fraction=fractions)
