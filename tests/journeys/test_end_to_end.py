"""The walking skeleton end to end on a tiny archive, in a scratch copy of the project:
Dagster materializes every asset (CLI `dagster asset materialize` and in-process), `dvc commit`
records the outputs, `dvc repro` is then up to date, and a push/pull round trip restores the
data byte for byte. Also checks MLflow got the run, metrics and a registered model version.
What a parameter change reruns is walked by `dvc exp run -S` in test_dvc_experiments.py (a
`dvc repro` after editing params.yaml here repeated it: ~70 s of the suite)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import REPO, run_ok, scratch_project, tiny_params

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def project(tiny_archive, tmp_path_factory):
    """The scratch git+DVC project with the repo's dvc.yaml and tiny params."""
    root = tmp_path_factory.mktemp("project")
    return root, scratch_project(root, tiny_archive.parent, tiny_params(Path("data")))


def test_dagster_then_dvc_then_push_and_pull(project):
    root, env = project
    # 1. the Dagster CLI selection works beside dvc in this one environment
    out = run_ok(
        [
            BIN / "dagster",
            "asset",
            "materialize",
            "-m",
            "dagster_project.definitions",
            "--select",
            "scene_catalog",
        ],
        root,
        env,
    )
    assert (root / "data" / "catalog" / "catalog.parquet").exists(), out.stderr[-2000:]
    # 2. the whole graph in-process (what `make run` does)
    run_ok([sys.executable, "-m", "dagster_project.run_pipeline"], root, env)
    evals = pd.read_csv(root / "data" / "results" / "evaluations.csv")
    ckpt = next((root / "data" / "models").iterdir())
    assert set(evals["model"]) == {ckpt.name, "random_init"}
    assert set(evals["metric"]) >= {"overall_accuracy", "macro_f1"}
    assert evals["value"].between(0, 1).all()
    run = json.loads((ckpt / "run.json").read_text())
    assert (ckpt / "model.safetensors").exists() and run["model_versions"][
        "spectralearth-encoder"
    ] >= 1
    assert run["band_stats"]["source"] == str(root / "data" / "patches" / "band_stats.json")
    # the evaluation partitions, the gathered table, trained models and one map per scene
    results = root / "data" / "results"
    report = (results / "report.md").read_text()
    assert f"{ckpt.name} (frozen)" in report and "random_init (frozen)" in report
    trained = (
        results / "heads" / ckpt.name / "synth_landcover" / "cpu" / "frozen" / "linear" / "lf1"
    )
    assert (trained / "head.json").exists()
    assert len(list((results / "figures").glob("*-confusion.png"))) == 2
    maps = sorted((root / "data" / "maps").glob("*.tif"))
    catalog = pd.read_parquet(root / "data" / "catalog" / "catalog.parquet", columns=["status"])
    assert len(maps) == int((catalog["status"] == "ok").sum()) > 0

    # 3. MLflow: the pretraining run has per-step loss and the version is registered
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'data' / 'mlflow' / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run["mlflow_run_id"], "train_loss")
    assert len(history) >= 1
    version = client.get_model_version(
        "spectralearth-encoder", str(run["model_versions"]["spectralearth-encoder"])
    )
    assert version.run_id == run["mlflow_run_id"]

    # 4. DVC agrees with what Dagster produced
    run_ok(["dvc", "commit", "-f"], root, env)
    status = run_ok(["dvc", "status"], root, env).stdout
    assert "up to date" in status, status
    repro = run_ok(["dvc", "repro"], root, env).stdout
    assert "Running stage" not in repro, repro

    # 4b. push to a local remote, lose the data and the cache, pull it back byte for byte
    run_ok(
        ["dvc", "remote", "add", "--local", "-f", "-d", "local", str(root / "remote")], root, env
    )
    run_ok(["dvc", "push"], root, env)
    index = root / "data" / "patches" / "index.parquet"
    before = index.read_bytes()
    shutil.rmtree(root / "data" / "patches")
    shutil.rmtree(root / ".dvc" / "cache")
    run_ok(["dvc", "pull"], root, env)
    assert index.read_bytes() == before
    assert "up to date" in run_ok(["dvc", "status"], root, env).stdout


def test_blocking_check_stops_downstream_assets(project, tmp_path):
    root, env = project
    strict = json.loads((REPO / "expectations" / "patch_index.json").read_text())
    strict["expectations"].append(
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 10**9}}
    )
    (tmp_path / "patch_index.json").write_text(json.dumps(strict))
    env = dict(
        env, SPECTRALEARTH_EXPECTATIONS=str(tmp_path), SPECTRALEARTH_DATA_DIR=str(tmp_path / "data")
    )
    shutil.copytree(root / "data" / "archive", tmp_path / "data" / "archive")
    shutil.copytree(root / "data" / "labels", tmp_path / "data" / "labels")
    proc = run_ok([sys.executable, "-m", "dagster_project.run_pipeline"], root, env, check=False)
    assert proc.returncode != 0
    assert "patch_index_expectations" in (proc.stdout + proc.stderr)
    assert (tmp_path / "data" / "patches" / "index.parquet").exists()
    assert not (tmp_path / "data" / "models").exists(), (
        "pretraining must not run past a failed blocking check"
    )
