"""Definitions: assets, checks, resources per deployment, jobs, the archive sensor and the
automation sensor.

Deployment is chosen by SPECTRALEARTH_DEPLOYMENT (local | prod); prod reads its params file
and data folder from SPECTRALEARTH_PARAMS / SPECTRALEARTH_DATA_DIR. The definitions read the
same params.yaml when they load (SPECTRALEARTH_PARAMS, else ./params.yaml) for what params
decide about the graph itself: each asset's code version (versions.py), its automation
condition and the sensors' intervals (automation.py), and which trained head the scene maps
follow. Edit params.yaml, then reload the code location (UI: Deployment -> Reload).
"""

from __future__ import annotations

import os

import dagster as dg

from dagster_project import automation, versions
from dagster_project.assets import curate, evaluate, ingest, pretrain
from dagster_project.checks import quality_checks
from dagster_project.jobs import ingest_job, refresh_job
from dagster_project.partitions import evaluation_asset_name, evaluation_partition
from dagster_project.resources import SpectralearthSettings
from dagster_project.sensors import build_archive_sensor
from spectralearth.config import AutomationSettings, Settings, load_settings
from spectralearth.stages.evaluate import default_requests


def resources_by_deployment(params_file: str | None = None) -> dict[str, dict]:
    return {
        "local": {"settings": SpectralearthSettings(params_file=params_file)},
        "prod": {
            "settings": SpectralearthSettings(
                params_file=dg.EnvVar("SPECTRALEARTH_PARAMS"),
                data_dir=dg.EnvVar("SPECTRALEARTH_DATA_DIR"),
            )
        },
    }


def _maps_head(settings: Settings) -> dg.AssetDep | None:
    """The evaluation partition whose trained head the scene maps use (params evaluate: and
    pretrain profile), unless ``predict.model`` names a fixed model."""
    if settings.predict.model:
        return None
    (own,) = [r for r in default_requests(settings) if r.model == settings.checkpoint_name()]
    key = evaluation_partition(own.model, own.dataset, own.protocol, own.head)
    return dg.AssetDep(
        evaluation_asset_name(own.model),
        partition_mapping=dg.SpecificPartitionsPartitionMapping([str(key)]),
    )


def _with_params(assets: list, settings: Settings | None) -> list:
    """Assets with their code versions and automation conditions from ``settings``."""
    codes = versions.code_versions(settings)
    policies = automation.conditions(settings) if settings is not None else {}
    head = _maps_head(settings) if settings is not None else None

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.to_user_string()
        deps = [*spec.deps, head] if name == "scene_maps" and head is not None else spec.deps
        return spec.replace_attributes(
            code_version=codes.get(name),
            automation_condition=policies.get(name),
            deps=deps,
        )

    return list(dg.map_asset_specs(apply, assets))


def build_definitions(params_file: str | os.PathLike | None = None) -> dg.Definitions:
    """The definitions for ``params_file`` (None: SPECTRALEARTH_PARAMS or ./params.yaml; the
    local settings resource reads the same file). Without any params file the graph still
    loads, with no code versions and no automation conditions."""
    settings = _settings_or_none(params_file)
    params_file = str(params_file) if params_file is not None else None
    policy = settings.automation if settings is not None else AutomationSettings()
    deployment = os.environ.get("SPECTRALEARTH_DEPLOYMENT", "local")
    assets = dg.load_assets_from_modules([ingest, curate, pretrain, evaluate])
    return dg.Definitions(
        assets=_with_params(assets, settings),
        asset_checks=quality_checks,
        jobs=[ingest_job, refresh_job],
        sensors=[build_archive_sensor(policy), automation.automation_sensor(policy)],
        resources=resources_by_deployment(params_file)[deployment],
        # one process per run: a run here is one heavy step or a chain of light ones, so a
        # process per step (the multiprocess default) only re-imports torch for each step;
        # runs go in parallel (dagster.yaml concurrency: runs) within the pools' limits
        executor=dg.in_process_executor,
    )


def _settings_or_none(params_file: str | os.PathLike | None) -> Settings | None:
    try:
        return load_settings(params_file)
    except FileNotFoundError:  # no params file: the graph still loads (e.g. docs tooling)
        return None


defs = build_definitions()
