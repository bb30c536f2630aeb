"""Rank helpers: the launcher's environment before any process group, no-ops on one process.
(Two real processes: tests/ssl/test_engine.py::test_two_process_ddp_...)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from spectralearth.ssl import distributed
from tests.helpers import REPO

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS")


@pytest.fixture
def bare_env(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_one_process(bare_env):
    assert distributed.global_rank() == 0 and distributed.world_size() == 1
    assert distributed.is_global_zero()
    distributed.barrier()  # returns at once
    payload = object()
    assert distributed.broadcast_from_zero(payload) is payload


def test_ranks_from_torchrun_and_slurm_before_any_process_group(bare_env):
    bare_env.setenv("RANK", "1")
    bare_env.setenv("WORLD_SIZE", "2")
    assert distributed.global_rank() == 1 and distributed.world_size() == 2
    assert not distributed.is_global_zero()
    bare_env.delenv("RANK")
    bare_env.delenv("WORLD_SIZE")
    bare_env.setenv("SLURM_PROCID", "3")
    bare_env.setenv("SLURM_NTASKS", "4")
    assert distributed.global_rank() == 3 and distributed.world_size() == 4
    bare_env.setenv("RANK", "zero")
    with pytest.raises(ValueError, match="RANK='zero'"):
        distributed.global_rank()


def test_importing_the_helpers_imports_no_torch():
    code = (
        "import sys; from spectralearth.ssl import distributed as d; "
        "assert d.is_global_zero(); assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
