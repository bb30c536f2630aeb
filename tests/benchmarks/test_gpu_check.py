"""benchmarks/gpu_check.py is known to work before a GPU is ever lent: without CUDA it says
so and exits 3 having run nothing; ``--dry-run-cpu`` runs every step of the GPU check (data
made by the library, pretraining of each paper model's family in bf16 and fp32 in its own
process, a frozen and a full evaluation) on tiny sizes and prints the tables."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _run(*args: str, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPECTRALEARTH_", "MLFLOW_"))}
    env.update(OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_cuda_it_says_so_and_exits_3_having_run_nothing(tmp_path):
    done = _run(tmp_path=tmp_path)
    assert done.returncode == 3, done.stderr
    assert "no CUDA device" in done.stderr and "--dry-run-cpu" in done.stderr
    assert list(tmp_path.iterdir()) == [], "nothing is written without a GPU"


@pytest.mark.slow
def test_the_dry_run_walks_every_step_on_the_cpu(tmp_path):
    # two of the five paper models, the most unlike (a two-view contrastive method with a
    # BatchNorm head and a memory bank on the ResNet; masked single-view MAE on the ViT): the
    # whole dry run takes ~10 min on a loaded 2-core machine (run it by hand: --dry-run-cpu)
    work = tmp_path / "work"
    done = _run(
        "--dry-run-cpu", "--workers", "2", "--data", str(work),
        "--models", "moco:spec_resnet50,mae:spec_vit_small", tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    pretraining = [r for r in rows if r.startswith("| pretrain ")]
    evaluations = [r for r in rows if r.startswith("| evaluate ")]
    # the paper backbones' small family members on the CPU
    assert [r.split(" | ")[0] for r in pretraining] == [
        "| pretrain moco spec_resnet18",
        "| pretrain mae spec_vit_tiny",
    ]
    assert [r.split(" | ")[0] for r in evaluations] == [
        "| evaluate frozen (moco-spec_resnet18-bf16)",
        "| evaluate full (moco-spec_resnet18-bf16)",
    ]
    assert all(r.endswith(" | ok |") for r in pretraining + evaluations), rows
    assert "gpu_check: 5 of 5 checks passed" in done.stdout
    # each model trained in bf16 and in fp32, through the pretraining stage (run.json)
    models = work / "data" / "models"
    assert sorted(p.name for p in models.iterdir()) == [
        "mae-spec_vit_tiny-bf16", "mae-spec_vit_tiny-fp32",
        "moco-spec_resnet18-bf16", "moco-spec_resnet18-fp32",
    ]  # fmt: skip
    assert all((models / m / "run.json").is_file() for m in os.listdir(models))


def test_a_failed_check_exits_1_naming_it_and_leaves_no_work_folder(tmp_path):
    # scenes smaller than a patch: curation keeps nothing, the data check fails
    done = _run("--dry-run-cpu", "--workers", "1", "--scene-size", "16", tmp_path=tmp_path)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FAILED data: " in done.stderr
    assert "FAILED evaluate: no checkpoint was trained" in done.stderr
    assert "gpu_check: 0 of 2 checks passed" in done.stdout
    assert list(tmp_path.iterdir()) == [], "the temporary work folder is removed"
