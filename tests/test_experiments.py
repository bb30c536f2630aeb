"""The files DVC compares (metrics.json and the plots' data), from evaluation rows: means over
seeds with their std, one entry per label fraction, NaN written as null (JSON has no NaN), and
only checkpoints that were evaluated in the pretraining section."""

from __future__ import annotations

import json
import math

import pandas as pd

from spectralearth.downstream.report import summarize
from spectralearth.experiments import (
    metrics_file,
    plots_dir,
    record_pretraining,
    write_experiment_files,
)
from spectralearth.layout import ResultsLayout


def _rows() -> pd.DataFrame:
    rows = []
    for model, method in (("moco-spec_resnet18", "moco"), ("random_init", None)):
        for fraction in (0.1, 1.0):
            for seed, f1 in ((0, 0.5), (1, 0.7)):
                for metric, value in (("macro_f1", f1), ("micro_iou", float("nan"))):
                    rows.append(
                        dict(model=model, method=method, backbone="spec_resnet18",
                             dataset="synth_landcover", protocol="frozen", head="linear",
                             label_fraction=fraction, split="test", seed=seed, metric=metric,
                             value=value, seconds=1.0, peak_mem_mb=10.0)
                    )  # fmt: skip
    return pd.DataFrame(rows)


def test_metrics_summary_and_plot_data(tmp_path):
    results = ResultsLayout(tmp_path / "results")
    run = {"method": "moco", "backbone": "spec_resnet18", "steps": 3, "final_loss": 1.5,
           "loss_history": [3.0, 2.0, 1.5], "mlflow_run_id": "r1"}  # fmt: skip
    record_pretraining(results, "moco-spec_resnet18", run)
    record_pretraining(results, "not-evaluated", run)  # an older checkpoint: left out
    files = write_experiment_files(results, summarize(_rows()))

    summary = json.loads(metrics_file(results).read_text())  # strict JSON: no NaN
    assert summary["pretrain"] == {"moco-spec_resnet18": {"final_loss": 1.5, "steps": 3}}
    leaf = summary["test"]["moco-spec_resnet18"]["synth_landcover"]["frozen"]["linear"]
    assert set(leaf) == {"lf0.1", "lf1"}
    assert leaf["lf1"]["macro_f1"] == 0.6
    assert math.isclose(leaf["lf1"]["macro_f1_std"], 0.1414213562, rel_tol=1e-6)
    assert leaf["lf1"]["micro_iou"] is None
    assert "random_init" in summary["test"]

    (loss,) = files.loss_curves
    assert loss == plots_dir(results) / "loss" / "moco-spec_resnet18.csv"
    assert pd.read_csv(loss).to_dict("list") == {"step": [1, 2, 3], "loss": [3.0, 2.0, 1.5]}
    table = pd.read_csv(files.label_fraction)
    assert len(table) == 4 and set(table["label_fraction"]) == {0.1, 1.0}
    assert set(table["series"]) == {
        "synth_landcover: moco-spec_resnet18 (frozen)",
        "synth_landcover: random_init (frozen)",
    }
    assert table["macro_f1"].tolist() == [0.6] * 4


def test_no_evaluation_yet_writes_empty_but_valid_files(tmp_path):
    results = ResultsLayout(tmp_path / "results")
    files = write_experiment_files(results, summarize(_rows().iloc[:0]))
    assert json.loads(files.metrics.read_text()) == {"pretrain": {}, "test": {}}
    assert files.loss_curves == ()
    assert pd.read_csv(files.label_fraction).empty
