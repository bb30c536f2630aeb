"""Shared fixtures: a tiny params.yaml and a tiny synthetic archive (session-scoped)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def shared(*parts: str) -> Path:
    """A path in ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real reference data not available: {p} (../shared/data is absent)")
    return p


def tiny_params(data_dir: Path, **section_overrides) -> dict:
    """The repo's params.yaml scaled down for tests (same keys, small numbers)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data_dir"] = str(data_dir)
    params["synth"].update(scenes=6, size=128, seed=7)
    params["curate"].update(patch_size=32, max_cloud_frac=0.05, val_frac=0.2, test_frac=0.2)
    params["pretrain"]["profiles"]["cpu-tiny"].update(
        steps=2, batch_size=4, crop_size=32, memory_bank_size=16
    )
    params["evaluate"].update(epochs=2, batch_size=4)
    for section, values in section_overrides.items():
        params[section].update(values)
    return params


def write_params(folder: Path, **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(folder / "data", **overrides), sort_keys=False))
    return path


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
    write_archive(root / "archive", scenes=6, size=128, seed=7, revisit_fraction=0.5)
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
LONGEST_FIRST = (
    "test_end_to_end.py",
    "test_browser.py",
    "test_crash_safety.py",
    "test_concurrency.py",
    "test_ui.py",
    "test_pretrain_engine.py",
)


def pytest_collection_modifyitems(session, config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable otherwise
