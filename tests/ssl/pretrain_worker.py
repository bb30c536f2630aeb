"""A pretraining run in its own process, for the resume (killed run) and DDP tests.

``python tests/ssl/pretrain_worker.py JOB.json`` (directly or under torchrun); JOB.json holds
shards, stats (a JSON file), out, settings (PretrainSettings keys), resume, and optionally
``dump`` (a folder: each rank saves its encoder parameters after step ``dump_step``) and
``slow`` (seconds to sleep after each step, so a test can stop the run part-way).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from spectralearth.config import PretrainSettings
from spectralearth.ssl import pretrain


class DumpParameters(pl.Callback):
    def __init__(self, folder: Path, step: int) -> None:
        self.folder, self.step = Path(folder), int(step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.folder.mkdir(parents=True, exist_ok=True)
            params = {n: p.detach().clone() for n, p in pl_module.encoder.named_parameters()}
            info = {
                "params": params,
                "world_size": trainer.world_size,
                "step": trainer.global_step,
                "loss": pl_module.loss_history[-1],
            }
            torch.save(
                info,
                self.folder / f"rank{trainer.global_rank}.pt",
            )


class Slow(pl.Callback):
    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)


def main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    callbacks: list = []
    if job.get("dump"):
        callbacks.append(DumpParameters(Path(job["dump"]), job.get("dump_step", 1)))
    if job.get("slow"):
        callbacks.append(Slow(job["slow"]))
    pretrain(
        PretrainSettings(**job["settings"]),
        Path(job["shards"]),
        json.loads(Path(job["stats"]).read_text()),
        Path(job["out"]),
        progress=False,
        resume=bool(job.get("resume")),
        callbacks=callbacks,
    )


if __name__ == "__main__":
    main(sys.argv[1])
