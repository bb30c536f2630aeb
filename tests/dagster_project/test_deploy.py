"""The committed Dagster instance templates (deploy/): the one-host template starts an
instance whose pools and run queue are what docs/scaling.md says, and two GPU steps in one
run execute one after the other under it; the several-hosts (Postgres) template is valid
instance configuration for this Dagster release (it is not started: no Postgres here)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from tests.helpers import REPO

DEPLOY = REPO / "deploy"


@pytest.fixture
def home(tmp_path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    return home


def _timed(name: str, seconds: float = 2.0):
    @dg.op(name=name, pool="gpu", config_schema={"log": str})
    def step(context) -> None:
        start = time.time()
        time.sleep(seconds)
        log = Path(context.op_config["log"])
        log.with_name(f"{name}.json").write_text(json.dumps([start, time.time()]))

    return step


gpu_a, gpu_b = _timed("gpu_a"), _timed("gpu_b")


@dg.job(executor_def=dg.multiprocess_executor)
def two_gpu_steps():
    gpu_a()
    gpu_b()


def test_one_host_template_runs_gpu_steps_one_at_a_time(home, tmp_path, monkeypatch):
    from dagster_project.pools import CURATE, GPU, apply_limits
    from spectralearth.config import AutomationSettings

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 1
        assert config.pool_config.pool_granularity.value == "op"
        assert config.run_queue_config.max_concurrent_runs == 4
        assert instance.event_log_storage.supports_global_concurrency_limits
        assert (home / "history" / "runs.db").is_file()  # SQLite under DAGSTER_HOME

        set_now = apply_limits(instance, AutomationSettings(curate_pool_limit=3))
        assert set_now == {GPU: 1, CURATE: 3}
        log = tmp_path / "steps" / "log"
        log.parent.mkdir()
        run_config = {"ops": {n: {"config": {"log": str(log)}} for n in ("gpu_a", "gpu_b")}}
        result = dg.execute_job(
            dg.reconstructable(two_gpu_steps), instance=instance, run_config=run_config
        )
        assert result.success
        (a0, a1), (b0, b1) = (
            json.loads((log.parent / f"{n}.json").read_text()) for n in ("gpu_a", "gpu_b")
        )
        assert a1 <= b0 or b1 <= a0, "two steps of the gpu pool (limit 1) overlapped"
        assert instance.event_log_storage.get_concurrency_info(GPU).active_slot_count == 0


def test_several_hosts_template_is_valid_instance_config(monkeypatch, tmp_path):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config_schema

    raw = yaml.safe_load((DEPLOY / "dagster-postgres.yaml").read_text())
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD"):
        monkeypatch.setenv(name, "x")
    result = process_config(dagster_instance_config_schema(), raw)
    assert result.success, result.errors
    postgres = result.value["storage"]["postgres"]["postgres_db"]
    assert set(postgres) >= {"hostname", "db_name", "username", "password"}
    assert result.value["concurrency"]["pools"]["default_limit"] == 1
    text = (DEPLOY / "dagster-postgres.yaml").read_text()
    assert "dagster-postgres==0.29.27" in text  # the pin for dagster 1.13.27
    assert dg.__version__.startswith("1.13.")


@pytest.mark.parametrize("template", ["dagster.yaml", "dagster-postgres.yaml"])
def test_templates_use_current_keys_only(template):
    """`concurrency:` replaced the run coordinator's and run queue's limits in Dagster 1.10;
    the old keys next to the new ones make the instance refuse to start."""
    raw = yaml.safe_load((DEPLOY / template).read_text())
    assert "run_queue" not in raw and "run_coordinator" not in raw
    assert "default_op_concurrency_limit" not in raw.get("concurrency", {})
    assert raw["telemetry"] == {"enabled": False}
