"""MLflow behind a tracking server, as a team shares it: `mlflow server` on 127.0.0.1 (a free
port; SQLite backend; artifacts proxied to a folder the client never reads), MLFLOW_TRACKING_URI
pointing at it, `spectralearth pretrain` (tiny) logs and registers the encoder there and writes
nothing to the local store, and `spectralearth evaluate --model
models:/spectralearth-encoder@latest-pretrained` evaluates the registered model from a copy
downloaded through the server (the local checkpoint is deleted first)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import make_fake, make_shards, write_params

pytestmark = pytest.mark.slow
MODEL = "models:/spectralearth-encoder@latest-pretrained"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    artifacts = root / "server-artifacts"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
           "--artifacts-destination", str(artifacts)]  # fmt: skip
    log = open(root / "server.log", "w")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}"
                )  # noqa: E501
            time.sleep(1)
        yield url, artifacts
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _cli(params: Path, env: dict, *args: str):
    return subprocess.run(
        [sys.executable, "-m", "spectralearth.cli", "--params", str(params), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def test_pretrain_then_evaluate_the_registered_model_through_a_server(server, tmp_path):
    import mlflow

    from spectralearth.config import load_settings

    url, server_artifacts = server
    params = write_params(tmp_path / "project", evaluate={"epochs": 1})
    env = {k: v for k, v in os.environ.items() if k not in ("SPECTRALEARTH_DATA_DIR",
                                                             "SPECTRALEARTH_PARAMS")}  # fmt: skip
    env.update(MLFLOW_TRACKING_URI=url, MLFLOW_DISABLE_TELEMETRY="true")
    settings = load_settings(params)
    layout = settings.layout
    _, stats, _, _ = make_shards(layout.patches)
    layout.curated.stats.write_text(json.dumps(stats))
    splits = tmp_path / "lists" / "enmap_cdl"
    splits.mkdir(parents=True)
    for split, base in {"train": 0, "val": 100, "test": 200}.items():
        lines = [f"{base + i:07d}/{i:05d}.tif" for i in range(4)]
        (splits / f"{split}.txt").write_text("\n".join(lines) + "\n")
    make_fake(splits.parent, layout.downstream, "--per-split", "4", "--size", "16", "--datasets",
              "enmap_cdl")  # fmt: skip

    run = _cli(params, env, "pretrain")
    assert run.returncode == 0, run.stderr[-3000:]
    checkpoint = layout.checkpoint(settings.checkpoint_name()).root
    record = json.loads((checkpoint / "run.json").read_text())
    assert not (layout.mlflow_dir / "mlflow.db").exists(), "the local store was used"
    stored = {p.name for p in server_artifacts.rglob("*") if p.is_file()}
    assert {"model.safetensors", "run.json", "MLmodel"} <= stored

    client = mlflow.MlflowClient(url)
    version = client.get_model_version_by_alias("spectralearth-encoder", "latest-pretrained")
    assert version.source == f"models:/{record['mlflow_model_id']}"
    download = client.get_model_version_download_uri(version.name, version.version)
    assert download.startswith("mlflow-artifacts:"), download  # only the server can read it

    weights = (checkpoint / "model.safetensors").read_bytes()
    for f in checkpoint.iterdir():  # the registered model must come from the server
        if f.is_file():
            f.unlink()
    results = tmp_path / "results"
    run = _cli(params, env, "evaluate", "--model", MODEL, "--dataset", "enmap_cdl",
               "--out", str(results))  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    copy = layout.mlflow_dir / "downloads" / record["mlflow_model_id"] / checkpoint.name
    assert (copy / "model.safetensors").read_bytes() == weights
    assert (
        results / "evaluations" / checkpoint.name / "enmap_cdl" / "frozen" / "linear" / "lf1.csv"
    ).is_file()  # noqa: E501
    assert not (layout.mlflow_dir / "mlflow.db").exists()

    evaluation = client.search_runs(
        [version.run_id and client.get_run(version.run_id).info.experiment_id],
        filter_string="tags.stage = 'evaluate'",
    )
    assert len(evaluation) == 1
    run = client.get_run(evaluation[0].info.run_id)  # search results leave model inputs out
    assert [m.model_id for m in run.inputs.model_inputs] == [record["mlflow_model_id"]]
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["enmap_cdl"]
    assert run.data.tags["pretrain_run_id"] == record["mlflow_run_id"]
