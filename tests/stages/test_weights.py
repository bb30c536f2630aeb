"""A researcher's first step: import the released SpectralEarth weights with the CLI, find
them registered in MLflow with their source, and evaluate them like any checkpoint. The file
here was written by the reference code's own classes (../shared/data, see its README)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spectralearth.config import load_settings
from tests.helpers import make_fake, sha256_file, shared, write_params


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "spectralearth.cli", *args], capture_output=True, text=True
    )


@pytest.fixture
def params(tmp_path, monkeypatch):
    for var in ("SPECTRALEARTH_DATA_DIR", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    return write_params(tmp_path / "cfg", evaluate={"epochs": 1})


def test_import_register_and_evaluate_the_reference_weights(params, tmp_path):
    import mlflow

    from spectralearth import tracking

    ref = shared("spectralearth_reference", "checkpoints", "ref_spec_vit_tiny_p4.pth")
    stats = shared("spectralearth_reference")
    out = tmp_path / "models" / "ref-tiny"
    run = _cli("--params", str(params), "import-weights", str(ref), "--backbone",
               "spec_vit_tiny", "--stats", str(stats), "--out", str(out))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "loaded strictly" in run.stdout and "latest-imported" in run.stdout
    record = json.loads((out / "run.json").read_text())
    assert record["source"]["kind"] == "imported"
    assert record["source"]["sha256"] == sha256_file(ref)
    assert record["band_stats"]["source"].startswith(str(stats))
    assert not list(out.parent.glob(".*staging"))

    settings = load_settings(params)
    tracking.configure(settings.tracking)
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("spectralearth-encoder", "latest-imported")
    assert version.tags["source_sha256"] == record["source"]["sha256"]

    # an imported checkpoint is a checkpoint like any other for `evaluate`
    splits = tmp_path / "lists" / "enmap_cdl"
    splits.mkdir(parents=True)
    for split, base in (("train", 0), ("val", 100), ("test", 200)):
        (splits / f"{split}.txt").write_text(
            "".join(f"{base + i:07d}/{i:05d}.tif\n" for i in range(3))
        )
    make_fake(tmp_path / "lists", tmp_path / "data", "--per-split", "3", "--size", "16",
              "--datasets", "enmap_cdl")  # fmt: skip
    results = tmp_path / "results"
    run = _cli("--params", str(params), "evaluate", "--model", str(out), "--dataset",
               str(tmp_path / "data" / "enmap_cdl"), "--out", str(results))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (results / "evaluations" / "ref-tiny" / "enmap_cdl").is_dir()


def test_a_file_of_another_architecture_is_refused_and_nothing_is_written(params, tmp_path):
    ref = shared("spectralearth_reference", "checkpoints", "ref_spec_vit_tiny_p4.pth")
    out = tmp_path / "models" / "wrong"
    run = _cli("--params", str(params), "import-weights", str(ref), "--backbone",
               "spec_vit_small", "--out", str(out))  # fmt: skip
    assert run.returncode == 1
    assert str(ref) in run.stderr and "spec_vit_tiny" in run.stderr  # what it does fit
    assert not out.exists() and not list(out.parent.glob(".*")) if out.parent.exists() else True
