"""The Dagster pretraining asset: one partition per method x backbone, with its metadata
(loss curve, throughput, parameter count, device) and the Dagster run id in MLflow."""

from __future__ import annotations

import json

import dagster as dg
import yaml

from tests.helpers import make_shards, write_params


def test_a_method_x_backbone_partition_trains_registers_and_reports(tmp_path, monkeypatch):
    import mlflow

    from dagster_project.assets.pretrain import pretrained_checkpoint
    from dagster_project.partitions import pretrain_partition
    from dagster_project.resources import SpectralearthSettings
    from spectralearth.config import load_settings
    from spectralearth.tracking import configure

    params = write_params(tmp_path / "project")
    monkeypatch.delenv("SPECTRALEARTH_DATA_DIR", raising=False)
    settings = load_settings(params)
    shards_dir, stats, _, _ = make_shards(tmp_path / "fake")
    settings.layout.patches.mkdir(parents=True)
    shards_dir.rename(settings.layout.patches / "shards")
    settings.layout.curated.stats.write_text(json.dumps(stats))

    key = pretrain_partition("dino", "spec_resnet18")
    with dg.instance_for_test() as instance:
        res = dg.materialize(
            [pretrained_checkpoint],
            instance=instance,
            resources={"settings": SpectralearthSettings(params_file=str(params))},
            partition_key=key,
        )
        assert res.success
        meta = res.asset_materializations_for_node("pretrained_checkpoint")[0].metadata
    assert meta["method"].value == "dino" and meta["backbone"].value == "spec_resnet18"
    assert meta["parameters"].value > 0 and meta["patches_per_second"].value > 0
    assert meta["device"].value == "cpu"
    assert "data:image/png;base64," in meta["loss_curve"].value
    configure(settings.tracking)
    version = mlflow.MlflowClient().get_model_version_by_alias(
        "spectralearth-spec-resnet18-dino", "latest-pretrained"
    )
    assert version.tags["dagster_run_id"] == res.run_id


def test_resuming_a_finished_run_makes_no_step_and_still_materializes(tmp_path, monkeypatch):
    """Defect: a run that made no step (final_loss None) raised TypeError in the asset."""
    from dagster_project.assets.pretrain import pretrained_checkpoint
    from dagster_project.partitions import pretrain_partition
    from dagster_project.resources import SpectralearthSettings
    from spectralearth.config import load_settings

    monkeypatch.delenv("SPECTRALEARTH_DATA_DIR", raising=False)
    params = write_params(tmp_path / "project")
    raw = yaml.safe_load(params.read_text())
    raw["pretrain"]["profiles"]["cpu-tiny"].update(steps=2, checkpoint_every_n_steps=1)
    params.write_text(yaml.safe_dump(raw))
    settings = load_settings(params)
    shards_dir, stats, _, _ = make_shards(tmp_path / "fake")
    settings.layout.patches.mkdir(parents=True)
    shards_dir.rename(settings.layout.patches / "shards")
    settings.layout.curated.stats.write_text(json.dumps(stats))
    resources = {"settings": SpectralearthSettings(params_file=str(params))}
    key = pretrain_partition("moco", "spec_resnet18")
    with dg.instance_for_test() as instance:
        first = dg.materialize([pretrained_checkpoint], instance=instance, resources=resources,
                               partition_key=key)  # fmt: skip
        assert first.success
        again = dg.materialize(
            [pretrained_checkpoint],
            instance=instance,
            resources=resources,
            partition_key=key,
            run_config={"ops": {"pretrained_checkpoint": {"config": {"resume": True}}}},
        )
        assert again.success
        meta = again.asset_materializations_for_node("pretrained_checkpoint")[0].metadata
    assert meta["steps"].value == 2
    assert meta["final_loss"].value == "n/a (no step run)"
