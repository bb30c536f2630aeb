"""Multi-process pretraining from the Dagster asset: ``torchrun -m spectralearth.cli
pretrain`` through Dagster Pipes (2 gloo processes on the CPU), and the launch choices that
are refused before anything starts."""

from __future__ import annotations

import dataclasses
import json

import dagster as dg
import pytest
import torch
import yaml

from spectralearth.config import load_settings
from tests.helpers import make_shards, write_params

gloo = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo")


def project(root, launch: dict, with_stats: bool = True, **profile):
    """A tiny params.yaml with ``launch`` = ``launch`` and the cpu-tiny profile
    updated with ``profile``, and a fake curated folder (shards, band statistics)."""
    params = write_params(root / "project")
    raw = yaml.safe_load(params.read_text())
    raw["launch"] = launch
    raw["pretrain"]["profiles"]["cpu-tiny"].update(profile)
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    settings = load_settings(params)
    _, stats, _, _ = make_shards(settings.layout.patches)
    if with_stats:
        settings.layout.curated.stats.write_text(json.dumps(stats))
    return params, settings


def materialize(params, instance, key=None):
    from dagster_project.assets.pretrain import pretrained_checkpoint
    from dagster_project.partitions import pretrain_partition
    from dagster_project.resources import SpectralearthSettings

    return dg.materialize(
        [pretrained_checkpoint],
        instance=instance,
        resources={"settings": SpectralearthSettings(params_file=str(params))},
        partition_key=key or pretrain_partition("moco", "spec_resnet18"),
        raise_on_error=False,
    )


def messages(instance, run_id) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id)]


@pytest.fixture(autouse=True)
def _no_inherited_paths(monkeypatch):
    for var in ("SPECTRALEARTH_DATA_DIR", "SPECTRALEARTH_PARAMS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


TWO_CPU_PROCESSES = dict(devices=2, strategy="ddp", accelerator="cpu", batch_size=8, steps=2)


@pytest.mark.slow
@gloo
def test_torchrun_through_pipes_reports_rank_zeros_metadata_and_logs(tmp_path, capfd):
    import mlflow

    from spectralearth.tracking import configure

    params, settings = project(tmp_path, {"launcher": "torchrun"}, **TWO_CPU_PROCESSES)
    with dg.instance_for_test() as instance:
        res = materialize(params, instance)
        logs = messages(instance, res.run_id)
    out = capfd.readouterr().out
    assert res.success, "\n".join(logs[-30:])
    meta = res.asset_materializations_for_node("pretrained_checkpoint")[0].metadata

    # The metadata rank 0 reported, typed as the in-process path types it.
    assert meta["launcher"].value == "torchrun" and meta["nproc_per_node"].value == 2
    assert meta["world_size"].value == 2 and meta["steps"].value == 2
    assert meta["method"].value == "moco" and meta["device"].value == "cpu"
    assert meta["parameters"].value > 0 and meta["patches_per_second"].value > 0
    assert isinstance(meta["checkpoint"], dg.PathMetadataValue)
    assert "data:image/png;base64," in meta["loss_curve"].value
    assert meta["registered/spectralearth-spec-resnet18-moco"].value == 1
    assert "summary" not in meta  # it became the asset's log line instead
    record = json.loads((settings.layout.checkpoint("moco-spec_resnet18").run).read_text())
    assert record["world_size"] == 2 and meta["mlflow_run_id"].value == record["mlflow_run_id"]

    # The logs came through: rank 0's lines in the event log (once), every process's output
    # in the step's stdout (the compute logs), rank 0's summary printed once.
    assert "[pipes] external process successfully opened dagster pipes." in logs
    started = [m for m in logs if m.startswith("pretrain: moco spec_resnet18 (profile cpu-tiny)")]
    assert len(started) == 1 and "started on 2 processes" in started[0], logs  # rank 0's
    summary = [m for m in logs if m.startswith("pretrain: moco spec_resnet18 2 steps")]
    assert len(summary) == 1, logs  # the asset's line, from rank 0's reported summary
    assert out.count("pretrain: moco spec_resnet18 2 steps") == 1, out[-3000:]

    # MLflow knows which Dagster run trained it.
    configure(settings.tracking)
    version = mlflow.MlflowClient().get_model_version_by_alias(
        "spectralearth-spec-resnet18-moco", "latest-pretrained"
    )
    assert version.tags["dagster_run_id"] == res.run_id


@pytest.mark.slow
@gloo
def test_a_refused_input_under_torchrun_fails_the_step_with_rank_zeros_message(tmp_path):
    params, settings = project(
        tmp_path, {"launcher": "torchrun"}, with_stats=False, **TWO_CPU_PROCESSES
    )
    with dg.instance_for_test() as instance:
        res = materialize(params, instance)
        events = list(instance.all_logs(res.run_id))
    assert not res.success
    errors = [e.dagster_event.engine_event_data.error for e in events if e.is_dagster_event
              and e.dagster_event.is_engine_event and e.dagster_event.engine_event_data.error]  # fmt: skip
    reported = " ".join(err.message for err in errors)
    assert str(settings.layout.curated.stats) in reported, reported
    assert f"spectralearth stats --patches {settings.layout.patches}" in reported
    assert not settings.layout.checkpoint("moco-spec_resnet18").root.exists()


def test_in_process_with_several_devices_is_refused_naming_the_key(tmp_path):
    params, settings = project(tmp_path, {"launcher": "in_process"}, **TWO_CPU_PROCESSES)
    with dg.instance_for_test() as instance:
        res = materialize(params, instance)
    assert not res.success
    (failure,) = res.get_step_failure_events()
    message = failure.event_specific_data.error.to_string()
    assert "launch.launcher: torchrun" in message and str(params) in message
    assert not settings.layout.checkpoint("moco-spec_resnet18").root.exists()


def test_the_launch_follows_the_profile(tmp_path):
    from dagster_project.pipes import torchrun_command, torchrun_processes

    params = write_params(tmp_path / "project")
    s = load_settings(params)
    assert s.launch.launcher == "auto" and torchrun_processes(s) is None  # one device: here

    def with_(launch: dict, **profile):
        return dataclasses.replace(
            s,
            launch=dataclasses.replace(s.launch, **launch),
            pretrain=dataclasses.replace(s.pretrain, **profile),
        )

    assert torchrun_processes(with_({}, devices=4)) == 4  # auto: several devices, torchrun
    assert torchrun_processes(with_({"launcher": "torchrun"})) == 1
    with pytest.raises(ValueError, match="nproc_per_node 2 differs from .*devices 4"):
        torchrun_processes(with_({"launcher": "torchrun", "nproc_per_node": 2}, devices=4))
    with pytest.raises(ValueError, match="num_nodes: 2"):
        torchrun_processes(with_({}, num_nodes=2))
    command = torchrun_command(with_({}, devices=4), tmp_path / "out", 4, resume=True)
    at = command.index("spectralearth.cli")
    assert command[at - 1] == "-m" and "--nproc-per-node=4" in command[:at]
    assert command[at + 1 :] == [
        "--params", str(params), "pretrain", "--profile", "cpu-tiny", "--method", "moco",
        "--backbone", "spec_resnet18", "--data", str(s.layout.patches),
        "--out", str(tmp_path / "out"), "--resume",
    ]  # fmt: skip


def test_a_bad_launcher_in_params_is_refused_at_load(tmp_path):
    from spectralearth.config import ParamsError

    params = write_params(tmp_path / "project")
    raw = yaml.safe_load(params.read_text())
    raw["launch"] = {"launcher": "mpirun"}
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"params.yaml: \[launch\] launcher 'mpirun'"):
        load_settings(params)
    raw["launch"] = {"nproc_per_node": 0}
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="nproc_per_node: 0 must be >= 1"):
        load_settings(params)
