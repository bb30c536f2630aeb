"""The multi-GPU journey on the CPU: ``torchrun --nproc_per_node 2`` of ``spectralearth
pretrain`` (gloo) on a curated folder, as a user launches it on a GPU node.

The command runs unchanged (``spectralearth.cli.main``) inside tests/ssl/pretrain_worker.py,
whose one hook makes each rank write the SHA-256 of its final encoder weights and its exit
status; torchrun writes each rank's stdout to its own file (``--redirects 3``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from spectralearth.config import load_settings
from tests.helpers import REPO, make_shards, state_dict_sha256, write_params

WORKER = REPO / "tests" / "ssl" / "pretrain_worker.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo"),
]


def two_process_project(root: Path) -> Path:
    """A tiny params.yaml whose profile trains on 2 CPU processes (DDP, global batch 8 = 2 x 4)
    and a fake curated folder (shards + band_stats.json) where it points."""
    params = write_params(root / "project")
    raw = yaml.safe_load(params.read_text())
    raw["pretrain"]["profiles"]["cpu-tiny"].update(
        devices=2, strategy="ddp", accelerator="cpu", steps=2, batch_size=8, num_workers=0
    )
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    settings = load_settings(params)
    _, stats, _, _ = make_shards(settings.layout.patches)
    settings.layout.curated.stats.write_text(json.dumps(stats))
    return params


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPECTRALEARTH_", "MLFLOW_"))}
    path = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")])
    return {**env, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def rank_stdout(log_dir: Path, rank: int) -> str:
    (path,) = log_dir.glob(f"*/attempt_0/{rank}/stdout.log")
    return path.read_text()


def test_torchrun_of_the_pretrain_command_publishes_once_with_identical_ranks(tmp_path):
    import mlflow

    params = two_process_project(tmp_path)
    settings = load_settings(params)
    dump, logs = tmp_path / "dump", tmp_path / "torchrun-logs"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    done = subprocess.run(
        [
            *torchrun,
            "--nproc_per_node=2",
            f"--log-dir={logs}",
            "--redirects=3",
            str(WORKER),
            "--cli",
            str(dump),
            "--",
            "--params",
            str(params),
            "pretrain",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    stderr = "\n".join(
        [done.stderr[-2000:], *(p.read_text()[-2000:] for p in logs.glob("*/*/*/stderr.log"))]
    )
    assert done.returncode == 0, stderr
    # Both processes ran the command to its end and exited 0.
    assert [(dump / f"exit-rank{r}.txt").read_text() for r in (0, 1)] == ["0", "0"], stderr

    # One checkpoint folder, one run.json (and its one copy in MLflow), recording 2 processes.
    out = settings.layout.checkpoint(settings.checkpoint_name()).root
    mlflow_dir = settings.layout.mlflow_dir
    written = sorted(tmp_path.rglob("run.json"))
    assert [p for p in written if not p.is_relative_to(mlflow_dir)] == [out / "run.json"]
    assert len([p for p in written if p.is_relative_to(mlflow_dir)]) == 1
    record = json.loads((out / "run.json").read_text())
    assert record["world_size"] == 2 and record["micro_batch_size"] == 4
    assert record["steps"] == 2
    # no GPU here: no made-up GPU peak; rank 0's wait for data is measured
    assert record["peak_gpu_mb"] is None
    assert 0 < record["data_wait_seconds"] and 0 < record["data_wait_share"] < 1
    assert not list(out.parent.glob(".*.staging")), "the staging folder is left behind"

    # Identical weights on both ranks, and they are the ones rank 0 published.
    from safetensors.torch import load_file

    r0, r1 = (json.loads((dump / f"hash-rank{r}.json").read_text()) for r in (0, 1))
    differ = sorted(k for k in r0["tensors"] if r0["tensors"][k] != r1["tensors"].get(k))
    assert r0["state_dict"] == r1["state_dict"], f"{len(differ)} tensors differ, e.g. {differ[:5]}"
    assert state_dict_sha256(load_file(out / "model.safetensors")) == r0["state_dict"]

    # One MLflow run, finished; one version of each registered model, from that run.
    mlflow.set_tracking_uri(settings.tracking.uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(settings.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert record["mlflow_run_id"] == runs[0].info.run_id
    registered = {m.name for m in client.search_registered_models()}
    assert registered == {"spectralearth-spec-resnet18-moco", settings.tracking.registered_model}
    for name in registered:
        versions = client.search_model_versions(f"name='{name}'")
        assert [(int(v.version), v.run_id) for v in versions] == [(1, runs[0].info.run_id)]
    assert record["model_versions"] == {name: 1 for name in registered}

    # Only rank 0 printed the stage's summary line.
    summary = "pretrain: moco spec_resnet18 2 steps"
    assert summary in rank_stdout(logs, 0)
    assert "pretrain:" not in rank_stdout(logs, 1), rank_stdout(logs, 1)
