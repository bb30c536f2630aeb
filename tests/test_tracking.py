"""MLflow 3 as a user of the registry meets it: the encoder is a LoggedModel (pyfunc from code,
safetensors, no pickle) with signature and input example, registered from its ``models:/m-...``
URI under aliases; the training data and the downstream dataset are ``mlflow.data`` inputs with
the md5 DVC records; evaluation metrics are logged against the model and the dataset; system
metrics are sampled while pretraining; metrics and params go in batches; the store is the one
params.yaml or MLFLOW_TRACKING_URI names. (The tracking-server journey is
tests/journeys/test_mlflow_server.py.)"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import yaml

from spectralearth import tracking
from spectralearth.config import load_settings
from tests.helpers import make_fake, make_shards, write_params

UMBRELLA = "spectralearth-encoder"
ARCH = "spectralearth-spec-resnet18-moco"


def _no_single_calls(monkeypatch):
    """Fail on one-metric or one-param calls: everything goes through log_batch."""
    import mlflow

    def single(*args, **kwargs):
        raise AssertionError("logged one by one instead of in a batch")

    monkeypatch.setattr(mlflow.MlflowClient, "log_metric", single)
    monkeypatch.setattr(mlflow.MlflowClient, "log_param", single)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny pretraining on fake shards and one evaluation of the registered model."""
    from spectralearth.stages.evaluate import EvaluationRequest, benchmark_results, evaluate
    from spectralearth.stages.pretrain import pretrain

    root = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("SPECTRALEARTH_DATA_DIR", "SPECTRALEARTH_PARAMS", "MLFLOW_TRACKING_URI"):
            mp.delenv(var, raising=False)
        params = write_params(
            root / "project", mlflow={"system_metrics_interval": 0.2}, evaluate={"epochs": 1}
        )
        settings = load_settings(params)
        curated = settings.layout.patches
        _, stats, _, _ = make_shards(curated)
        settings.layout.curated.stats.write_text(json.dumps(stats))
        splits = root / "lists" / "enmap_cdl"
        splits.mkdir(parents=True)
        for split, base in {"train": 0, "val": 100, "test": 200}.items():
            lines = [f"{base + i:07d}/{i:05d}.tif" for i in range(4)]
            (splits / f"{split}.txt").write_text("\n".join(lines) + "\n")
        make_fake(splits.parent, settings.layout.downstream, "--per-split", "4", "--size", "16",
                  "--datasets", "enmap_cdl")  # fmt: skip
        out = settings.layout.checkpoint(settings.checkpoint_name()).root
        _no_single_calls(mp)
        result = pretrain(settings.pretrain, curated, out, settings.tracking, progress=False)
        results = settings.layout.results
        request = EvaluationRequest(
            model=f"models:/{UMBRELLA}@latest-pretrained",
            dataset="enmap_cdl",
            protocol="frozen",
            head="linear",
        )
        evaluation = evaluate(
            request,
            settings.evaluate,
            settings.layout,
            results,
            settings.tracking,
            default_backbone="spec_resnet18",
        )
        benchmark_results(results)
    return settings, result, evaluation


@pytest.fixture
def client(pretrained):
    import mlflow

    tracking.configure(pretrained[0].tracking)
    return mlflow.MlflowClient()


def test_the_encoder_is_a_logged_model_registered_from_its_uri(pretrained, client):
    from mlflow.entities import LoggedModelStatus

    settings, result, _ = pretrained
    run = json.loads((result.checkpoint / "run.json").read_text())
    model_id = run["mlflow_model_id"]
    assert result.mlflow_model_id == model_id and model_id.startswith("m-")
    assert run["mlflow_model_uri"] == f"models:/{model_id}"
    model = client.get_logged_model(model_id)
    assert model.status == LoggedModelStatus.READY
    assert model.source_run_id == result.mlflow_run_id
    for name in (UMBRELLA, ARCH):
        version = client.get_model_version_by_alias(name, "latest-pretrained")
        assert version.source == f"models:/{model_id}"
        assert tracking.version_model_id(version) == model_id
        assert version.run_id == result.mlflow_run_id
        assert version.tags["checkpoint"] == result.checkpoint.name
        assert dict(result.model_versions)[name] == version.version
    assert client.get_run(result.mlflow_run_id).info.status == "FINISHED"


def test_the_logged_encoder_loads_without_pickle_and_embeds_as_the_checkpoint(pretrained):
    import mlflow
    import torch

    from spectralearth.data.shards import BandNormalize
    from spectralearth.models import load_pretrained

    settings, result, _ = pretrained
    tracking.configure(settings.tracking)
    uri = f"models:/{UMBRELLA}@latest-pretrained"
    local = mlflow.artifacts.download_artifacts(uri)
    from pathlib import Path

    files = {p.relative_to(local).as_posix() for p in Path(local).rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))], files
    assert {"artifacts/model.safetensors", "artifacts/run.json", "encoder_model.py"} <= files
    assert "input_example.json" in files
    model = mlflow.pyfunc.load_model(uri)
    spec = model.metadata.get_input_schema().inputs[0]
    assert spec.shape == (-1, 202, -1, -1) and spec.type == np.dtype("float32")
    assert model.metadata.get_output_schema().inputs[0].shape == (-1, 512)
    x = np.random.default_rng(0).uniform(200, 4000, (3, 202, 16, 16)).astype(np.float32)
    got = model.predict(x)
    run = json.loads((result.checkpoint / "run.json").read_text())
    with torch.no_grad():
        want = load_pretrained(result.checkpoint)(
            BandNormalize(run["band_stats"])(torch.from_numpy(x))
        )
    assert got.shape == (3, 512)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="202"):
        model.predict(x[:, :100])  # the signature's band count is enforced


def test_the_training_data_is_an_input_with_the_md5_dvc_records(pretrained, client):
    settings, result, _ = pretrained
    inputs = client.get_run(result.mlflow_run_id).inputs.dataset_inputs
    by_name = {i.dataset.name: i for i in inputs}
    manifest = settings.layout.curated.manifest  # fake shards: no patch index file
    assert set(by_name) == {"shard_manifest"}
    entry = by_name["shard_manifest"]
    assert entry.dataset.digest == hashlib.md5(manifest.read_bytes()).hexdigest()
    assert json.loads(entry.dataset.source)["uri"] == str(manifest.resolve())
    assert {"patch_id", "location_id", "split"} <= {
        c["name"] for c in json.loads(entry.dataset.schema)["mlflow_colspec"]
    }
    assert {t.key: t.value for t in entry.tags}["mlflow.data.context"] == "train"


def test_system_metrics_are_sampled_while_it_trains(pretrained, client):
    _, result, _ = pretrained
    metrics = client.get_run(result.mlflow_run_id).data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in metrics), sorted(metrics)
    assert "system/system_memory_usage_megabytes" in metrics
    assert metrics["final_loss"] == pytest.approx(result.final_loss)


def test_evaluation_metrics_are_logged_against_the_model_and_the_dataset(pretrained, client):
    settings, result, evaluation = pretrained
    dataset_dir = settings.layout.downstream / "enmap_cdl"
    digest = tracking.dvc_md5(dataset_dir)
    run = client.get_run(evaluation.mlflow_run_id)
    (dataset_input,) = run.inputs.dataset_inputs
    assert (dataset_input.dataset.name, dataset_input.dataset.digest) == ("enmap_cdl", digest)
    assert [m.model_id for m in run.inputs.model_inputs] == [result.mlflow_model_id]
    assert run.data.tags["pretrain_run_id"] == result.mlflow_run_id
    key = f"{result.checkpoint.name}/enmap_cdl/macro_f1"
    (metric,) = client.get_metric_history(run.info.run_id, key)
    test = evaluation.test
    assert metric.value == pytest.approx(float(test[test["metric"] == "macro_f1"]["value"].iloc[0]))
    # the LoggedModel's page lists it, with the dataset it was measured on
    on_model = [m for m in client.get_logged_model(result.mlflow_model_id).metrics if m.key == key]
    assert [(m.run_id, m.dataset_name, m.dataset_digest, m.value) for m in on_model] == [
        (run.info.run_id, "enmap_cdl", digest, metric.value)
    ]


def test_the_registered_model_is_evaluated_from_a_downloaded_copy(pretrained):
    settings, result, evaluation = pretrained
    cache = settings.layout.mlflow_dir / "downloads" / result.mlflow_model_id
    copy = cache / result.checkpoint.name
    assert (copy / "model.safetensors").read_bytes() == (
        result.checkpoint / "model.safetensors"
    ).read_bytes()
    # results go under the checkpoint's own name, whichever way it was named
    assert evaluation.keys[0].checkpoint == result.checkpoint.name
    assert not list(cache.glob(".*.download"))


def test_dvc_files_hold_the_pretraining_and_test_metrics(pretrained):
    settings, result, evaluation = pretrained
    results = settings.layout.results.root
    summary = json.loads((results / "metrics.json").read_text())
    name = result.checkpoint.name
    assert summary["pretrain"][name]["steps"] == result.steps
    assert summary["pretrain"][name]["final_loss"] == pytest.approx(result.final_loss)
    leaf = summary["test"][name]["enmap_cdl"]["frozen"]["linear"]["lf1"]
    test = evaluation.test.set_index("metric")["value"]
    assert leaf["macro_f1"] == pytest.approx(float(test["macro_f1"]))
    assert set(leaf) == set(test.index)
    loss = (results / "plots" / "loss" / f"{name}.csv").read_text().splitlines()
    assert loss[0] == "step,loss" and len(loss) == result.steps + 1
    confusion = (results / "plots" / "confusion" / f"{evaluation.keys[0].stem}.csv").read_text()
    counts = [int(line.rsplit(",", 1)[1]) for line in confusion.splitlines()[1:]]
    assert sum(counts) > 0
    fractions = (results / "plots" / "label_fraction.csv").read_text().splitlines()
    assert fractions[0].startswith("series,dataset,model,protocol,head,label_fraction")


def test_an_unknown_alias_fails_naming_the_spec_and_downloads_nothing(pretrained, capsys):
    from spectralearth.cli import main

    settings, _, _ = pretrained
    before = sorted((settings.layout.mlflow_dir / "downloads").rglob("*"))
    code = main(["--params", str(settings.params_file), "evaluate", "--model",
                 f"models:/{UMBRELLA}@no-such-alias", "--dataset", "enmap_cdl"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert f"models:/{UMBRELLA}@no-such-alias" in err and "no-such-alias" in err
    assert sorted((settings.layout.mlflow_dir / "downloads").rglob("*")) == before


# --- where the store is ---------------------------------------------------------------------


def test_the_tracking_uri_comes_from_the_env_then_params_then_the_local_store(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SPECTRALEARTH_DATA_DIR", raising=False)
    params = write_params(tmp_path / "p")
    default = load_settings(params).tracking
    assert (
        default.uri == f"sqlite:///{(tmp_path / 'p' / 'data' / 'mlflow' / 'mlflow.db').resolve()}"
    )
    raw = yaml.safe_load(params.read_text())
    raw["mlflow"]["tracking_uri"] = "http://127.0.0.1:1"
    params.write_text(yaml.safe_dump(raw))
    assert load_settings(params).tracking.uri == "http://127.0.0.1:1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:2")
    assert load_settings(params).tracking.uri == "http://127.0.0.1:2"


def test_an_explicit_sqlite_store_keeps_its_artifacts_beside_it_not_in_the_cwd(
    tmp_path, monkeypatch
):
    import mlflow

    db = tmp_path / "elsewhere" / "store.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(write_params(tmp_path / "p"))
    run_id = tracking.start_run(settings.tracking, "probe")
    uri = mlflow.MlflowClient(settings.tracking.uri).get_run(run_id).info.artifact_uri
    assert uri.startswith((db.parent / "artifacts").as_uri()), uri
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()


def test_a_server_that_does_not_answer_fails_fast_naming_it(tmp_path, monkeypatch):
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    settings = load_settings(write_params(tmp_path / "p"))
    start = time.monotonic()
    with pytest.raises(tracking.TrackingStoreError, match=f"127.0.0.1:{port}"):
        tracking.check_store(settings.tracking)
    assert time.monotonic() - start < 60
    assert not (tmp_path / "p" / "data" / "mlflow").exists()


def test_system_metrics_interval_is_checked(tmp_path):
    from spectralearth.config import ParamsError

    with pytest.raises(ParamsError, match="system_metrics_interval"):
        load_settings(write_params(tmp_path / "p", mlflow={"system_metrics_interval": -1}))


def test_dvc_md5_matches_dvc_for_a_folder(tmp_path):
    """The digest is DVC's own directory hash (checked against dvc's hashing code)."""
    from dvc_data.hashfile.hash import file_md5 as dvc_file_md5

    folder = tmp_path / "d"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "x.bin").write_bytes(b"\x00\x01" * 100)
    (folder / "y.txt").write_text("hello\r\nworld\n")
    entries = sorted(
        ({"md5": dvc_file_md5(str(p)), "relpath": p.relative_to(folder).as_posix()}
         for p in folder.rglob("*") if p.is_file()),
        key=lambda e: e["relpath"],
    )  # fmt: skip
    from dvc_data.hashfile.tree import Tree

    tree = Tree.from_list(entries)
    tree.digest()
    assert tracking.dvc_md5(folder) == tree.hash_info.value
    assert tracking.dvc_md5(folder / "y.txt") == dvc_file_md5(str(folder / "y.txt"))


def test_a_checkpoint_from_another_store_is_evaluated_without_a_model_link(tmp_path, monkeypatch):
    """Its run.json names a LoggedModel this store does not have: the metrics are logged, the
    id is kept as a tag, nothing fails."""
    import mlflow
    import pandas as pd

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings(write_params(tmp_path / "p"))
    rows = pd.DataFrame(
        {"model": ["ckpt"], "dataset": ["d"], "metric": ["macro_f1"], "value": [0.5]}
    )
    csv = tmp_path / "rows.csv"
    rows.to_csv(csv, index=False)
    run_id = tracking.log_evaluation(settings.tracking, rows, None, csv, model_id="m-0123abcd")
    run = mlflow.MlflowClient(settings.tracking.uri).get_run(run_id)
    assert run.data.metrics == {"ckpt/d/macro_f1": 0.5}
    assert run.data.tags["model_id_elsewhere"] == "m-0123abcd" and "model_id" not in run.data.tags
    assert run.inputs.model_inputs == []


def test_configuring_one_store_does_not_point_later_settings_at_it(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into the environment; left there, a
    second data folder in the same process (or a subprocess) would log into the first one's
    store, silently."""
    import os

    from spectralearth.config import load_settings
    from spectralearth.tracking import configure
    from tests.helpers import write_params

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SPECTRALEARTH_DATA_DIR", raising=False)
    first = load_settings(write_params(tmp_path / "a"))
    second = load_settings(write_params(tmp_path / "b"))
    configure(first.tracking)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert second.tracking.uri != first.tracking.uri
    assert str(tmp_path / "b") in second.tracking.uri
