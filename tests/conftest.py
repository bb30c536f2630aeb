"""Shared fixtures: a tiny synthetic archive (session-scoped) and its copies; helpers are in
tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _mlflow_uris_stay_in_their_test():
    """``mlflow.set_tracking_uri`` / ``set_registry_uri`` write process-wide state (module
    globals and the environment): a test that calls them, directly or through the library,
    must not point the later tests of its worker at its own store."""
    import sys

    before = {k: os.environ.get(k) for k in MLFLOW_URI_VARS}
    yield
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(before["MLFLOW_TRACKING_URI"])  # None: MLflow's default again
        mlflow.set_registry_uri(before["MLFLOW_REGISTRY_URI"])
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: tiny models gain nothing from two, and on a shared 2-core
    machine OpenMP's spinning threads made training tests 3-4x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory) -> Path:
    """6 small products (128 px; ~20 patches of 32 px) in two UTM zones with revisits; labels beside the archive."""
    from spectralearth.synth import write_archive

    root = tmp_path_factory.mktemp("tiny") / "data"
    write_archive(
        root / "archive", root / "labels", scenes=6, size=128, seed=7, revisit_fraction=0.5
    )
    return root / "archive"


@pytest.fixture
def archive_copy(tiny_archive, tmp_path) -> Path:
    """A private copy of the tiny archive (with labels) that a test may damage."""
    import shutil

    dst = tmp_path / "data"
    shutil.copytree(tiny_archive.parent, dst)
    return dst / "archive"


# The longest test files, longest first: under pytest-xdist (make test) they start at once
# on separate workers instead of finishing last (with --no-loadscope-reorder).
LONGEST_FIRST = (  # seconds per file in a full `make test` on 2 cores (2026-12-02)
    "dagster_project/test_daemon.py",  # 336
    "journeys/test_dvc_experiments.py",  # 204
    "dagster_project/test_journey.py",  # 149
    "journeys/test_end_to_end.py",  # ~116
    "benchmarks/test_gpu_check.py",  # 110
    "benchmarks/test_bench_ssl.py",  # 93
    "journeys/test_mlflow_server.py",  # 84
    "journeys/test_browser.py",  # skipped without Chromium; CI has it
    "reliability/test_crash_safety.py",  # ~60
    "test_ui.py",  # 43
    "ssl/test_engine.py",  # 42
    "dagster_project/test_pipes.py",  # 37
    "stages/test_weights.py",  # 34
    "journeys/test_torchrun.py",  # 30
    "reliability/test_concurrency.py",  # 27
)


TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(session, config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(
        key=lambda item: rank.get(item.path.relative_to(TESTS).as_posix(), len(rank))
    )  # stable otherwise
