"""Definitions: assets, checks, resources per deployment, sensors and schedules.

Deployment is chosen by SPECTRALEARTH_DEPLOYMENT (local | prod); prod reads its params file
and data folder from SPECTRALEARTH_PARAMS / SPECTRALEARTH_DATA_DIR.
"""

import os

import dagster as dg

from dagster_project.assets import curate, evaluate, ingest, pretrain
from dagster_project.checks import quality_checks
from dagster_project.resources import SpectralearthSettings
from dagster_project.schedules import daily_refresh, downstream_job
from dagster_project.sensors import (
    archive_sensor,
    curate_job,
    evaluate_job,
    evaluation_sensor,
    ingest_job,
    map_job,
    results_job,
)

RESOURCES_BY_DEPLOYMENT = {
    "local": {"settings": SpectralearthSettings()},
    "prod": {
        "settings": SpectralearthSettings(
            params_file=dg.EnvVar("SPECTRALEARTH_PARAMS"),
            data_dir=dg.EnvVar("SPECTRALEARTH_DATA_DIR"),
        )
    },
}

all_assets = dg.load_assets_from_modules([ingest, curate, pretrain, evaluate])

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=quality_checks,
    jobs=[ingest_job, curate_job, downstream_job, evaluate_job, results_job, map_job],
    sensors=[archive_sensor, evaluation_sensor],
    schedules=[daily_refresh],
    resources=RESOURCES_BY_DEPLOYMENT[os.environ.get("SPECTRALEARTH_DEPLOYMENT", "local")],
)
