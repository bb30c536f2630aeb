"""Concurrency pools of the heavy steps (Dagster pools, enforced per step by the instance).

- ``gpu``: pretraining, evaluations and scene maps; one step at a time by default
  (``automation.gpu_pool_limit``), so two runs never fight over one accelerator's memory.
- ``curate``: one scene's curation each; as many at once as the host has cores by default
  (``automation.curate_pool_limit``, 0 = ``os.cpu_count()``).

A pool's limit lives in the instance's storage, not in dagster.yaml (which holds only
``concurrency: pools: default_limit`` for pools without their own limit). :func:`apply_limits`
writes the params.yaml limits of the pools that have none yet; ``make run``
(``run_pipeline``) and every tick of the archive sensor call it, so a limit set later in the
UI or with ``dagster instance concurrency set gpu 2`` wins and is never overwritten.
"""

from __future__ import annotations

import dagster as dg

from spectralearth.config import AutomationSettings

GPU = "gpu"
CURATE = "curate"


def pool_limits(settings: AutomationSettings) -> dict[str, int]:
    """The limit params.yaml gives each pool."""
    return {GPU: settings.gpu_pool_limit, CURATE: settings.curate_slots}


def apply_limits(instance: dg.DagsterInstance, settings: AutomationSettings) -> dict[str, int]:
    """Set the params.yaml limit of each pool that has no limit in ``instance`` yet; returns
    the pools it set (nothing on a storage without pools, e.g. an in-memory instance)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    # a pool that only holds the instance's default_limit has no limit of its own yet
    configured = {p.name for p in storage.get_pool_limits() if not p.from_default}
    missing = {k: v for k, v in pool_limits(settings).items() if k not in configured}
    for pool, limit in missing.items():
        storage.set_concurrency_slots(pool, limit)
    return missing
