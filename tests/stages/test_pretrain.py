"""The pretraining stage as a user meets it: a curated folder is normalised with its own
statistics (recorded in the checkpoint), a folder without them is refused naming the command
that makes them, and nothing replaces a checkpoint until MLflow has registered the new one."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from spectralearth.config import load_settings
from tests.helpers import make_shards, write_params


def _curated(root, seed: int):
    """A fake curated folder: shards + manifest (make_shards) and, optionally, statistics."""
    shards_dir, stats, _, _ = make_shards(root, seed=seed)
    return root, stats


def _cli(*args, env=None):
    import os

    return subprocess.run(
        [sys.executable, "-m", "spectralearth.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def project(tmp_path, monkeypatch):
    for var in ("SPECTRALEARTH_DATA_DIR", "SPECTRALEARTH_PARAMS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    params = write_params(tmp_path / "project")
    settings = load_settings(params)
    # the default data folder has statistics of its own: they must never be used for another
    default, default_stats = _curated(settings.layout.patches, seed=1)
    settings.layout.curated.stats.write_text(json.dumps(default_stats))
    return params, settings


def test_another_folder_without_statistics_is_refused_naming_the_command(project, tmp_path):
    params, settings = project
    other, _ = _curated(tmp_path / "other", seed=2)
    out = tmp_path / "ckpt"
    run = _cli("--params", str(params), "pretrain", "--data", str(other), "--out", str(out))
    assert run.returncode == 1
    assert f"spectralearth stats --patches {other}" in run.stderr
    assert str(other / "band_stats.json") in run.stderr
    assert not out.exists()


def test_another_folder_is_normalised_with_its_own_statistics(project, tmp_path):
    params, settings = project
    other, other_stats = _curated(tmp_path / "other", seed=2)
    (other / "band_stats.json").write_text(json.dumps(other_stats))
    out = tmp_path / "ckpt"
    run = _cli("--params", str(params), "pretrain", "--data", str(other), "--out", str(out))
    assert run.returncode == 0, run.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["band_stats"]["source"] == str(other / "band_stats.json")
    assert record["band_stats"]["mean"] == other_stats["mean"]
    assert record["source"]["data"] == str(other.resolve())
    assert "bands" not in record and record["in_chans"] == 202


def test_a_damaged_tracking_store_fails_before_training_naming_the_file(project, tmp_path):
    params, settings = project
    db = settings.tracking.local_db
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84 + b"garbage" * 500)
    out = tmp_path / "ckpt"
    run = _cli("--params", str(params), "pretrain", "--out", str(out))
    assert run.returncode == 1
    assert str(db) in run.stderr and "move it aside" in run.stderr
    assert not out.exists()


def test_a_foreign_sqlite_file_is_not_taken_for_a_tracking_store(project, tmp_path):
    params, settings = project
    db = settings.tracking.local_db
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE invoices (id INTEGER)")
    run = _cli("--params", str(params), "pretrain", "--out", str(tmp_path / "ckpt"))
    assert run.returncode == 1 and "not an MLflow store" in run.stderr and str(db) in run.stderr


def test_a_failed_registration_leaves_the_previous_checkpoint_in_place(project, monkeypatch):
    from spectralearth import tracking
    from spectralearth.stages.pretrain import pretrain

    _, settings = project
    out = settings.layout.checkpoint(settings.checkpoint_name()).root
    first = pretrain(
        settings.pretrain, settings.layout.patches, out, settings.tracking, progress=False
    )
    before = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("database disk image is malformed")

    monkeypatch.setattr(tracking, "register_checkpoint", broken)
    with pytest.raises(RuntimeError, match="malformed"):
        pretrain(settings.pretrain, settings.layout.patches, out, settings.tracking, progress=False)
    after = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    assert after == before, "the unregistered model must not replace the registered one"
    assert not list(out.parent.glob(".*.staging"))
    import mlflow

    tracking.configure(settings.tracking)
    runs = mlflow.MlflowClient().search_runs(
        [mlflow.get_experiment_by_name(settings.tracking.experiment).experiment_id]
    )
    statuses = sorted(r.info.status for r in runs)
    assert statuses == ["FAILED", "FINISHED"]
    assert first.mlflow_run_id in {r.info.run_id for r in runs if r.info.status == "FINISHED"}
