"""Pretrain: a curated folder -> an encoder checkpoint folder, tracked and registered in MLflow.

What a user can rely on:

- The curated folder's own band statistics normalise it (``--stats`` overrides); a folder
  without them is refused, naming the command that makes them. The checkpoint records the
  statistics (values and source) so everything downstream can tell.
- The tracking store is opened before training, so a damaged or unwritable store fails in
  seconds, naming the file.
- The new ``model.safetensors`` and ``run.json`` are written to a staging folder and swapped
  into the output folder only after MLflow has logged and registered them: a failed run
  leaves the previous checkpoint in place (resumable Lightning checkpoints still go straight
  to ``OUT/checkpoints``, so ``--resume`` works after a crash).
- Under ``torchrun`` only global rank 0 creates the MLflow run, logs, registers and writes the
  folder; the other ranks train, wait, and return the same result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from spectralearth.config import PretrainSettings, TrackingSettings
from spectralearth.layout import CheckpointLayout
from spectralearth.profiling import StageUsage, Usage
from spectralearth.stages.result import Figure, StageResult, usage_metadata

RUN_FORMAT_VERSION = 2


@dataclass(frozen=True)
class Pretraining(StageResult):
    method: str
    backbone: str
    profile: str
    checkpoint: Path
    steps: int
    final_loss: float | None  # None when the run made no step (e.g. resuming a finished run)
    seconds: float
    patches_per_second: float | None
    parameters: int
    device: str
    world_size: int
    band_stats_source: str
    mlflow_run_id: str | None
    model_versions: tuple[tuple[str, int], ...]  # (registered model, version)
    collapse: dict = field(default_factory=dict)  # feature std, effective rank, collapsed
    usage: Usage | None = None
    mlflow_model_id: str | None = None  # the encoder's LoggedModel (models:/<id>)
    # torch.cuda.max_memory_allocated of the training process during fit (MB); under DDP each
    # rank has its own GPU and this is rank 0's; None when it trained on the CPU
    peak_gpu_mb: float | None = None
    data_wait_share: float | None = None  # share of training time rank 0 waited for data

    @property
    def loss_png(self) -> Path:
        return CheckpointLayout(self.checkpoint).loss_curve

    def metadata(self) -> dict:
        return {
            "method": self.method,
            "backbone": self.backbone,
            "profile": self.profile,
            "steps": self.steps,
            # Dagster metadata cannot be None: a run without a step has no final loss
            "final_loss": self.final_loss if self.final_loss is not None else "n/a (no step run)",
            "patches_per_second": self.patches_per_second or 0.0,
            "parameters": self.parameters,
            "device": self.device,
            "world_size": self.world_size,
            "band_stats": self.band_stats_source,
            **{f"collapse/{k}": v for k, v in self.collapse.items() if v is not None},
            "loss_curve": Figure(self.loss_png, "training loss"),
            "mlflow_run_id": self.mlflow_run_id or "",
            "mlflow_model_id": self.mlflow_model_id or "",
            **{f"registered/{name}": version for name, version in self.model_versions},
            "checkpoint": self.checkpoint,
            **usage_metadata(self.usage),
            # the training process's own GPU peak (rank 0's under DDP) over the stage's sampler
            **({"peak_gpu_mb": self.peak_gpu_mb} if self.peak_gpu_mb is not None else {}),
            **(
                {"data_wait_share": self.data_wait_share}
                if self.data_wait_share is not None
                else {}
            ),
        }

    def summary(self) -> str:
        loss = "n/a (no step run)" if self.final_loss is None else f"{self.final_loss:.4f}"
        registered = ", ".join(f"{n} v{v}" for n, v in self.model_versions) or "nothing"
        gpu = "" if self.peak_gpu_mb is None else f", peak GPU memory {self.peak_gpu_mb:.0f} MB"
        ranks = " (rank 0's)" if gpu and self.world_size > 1 else ""
        return (
            f"pretrain: {self.method} {self.backbone} {self.steps} steps, final loss {loss}"
            f"{gpu}{ranks}, registered {registered} -> {self.checkpoint}"
        )


def pretrain(
    settings: PretrainSettings,
    curated: Path,
    out: Path,
    tracking: TrackingSettings,
    *,
    stats: Path | None = None,
    resume: bool = False,
    dagster_run_id: str | None = None,
    progress: bool = True,
    callbacks: list | None = None,
) -> Pretraining:
    """Pretrain ``settings.backbone`` with ``settings.method`` on ``curated``'s train split
    into ``out`` (``CheckpointLayout``); ``resume`` continues from ``out/checkpoints/last.ckpt``.
    ``callbacks``: Lightning callbacks given to the trainer (benchmarks time steps with them)."""
    from spectralearth import tracking as mlf
    from spectralearth.ssl.distributed import broadcast_from_zero, is_global_zero
    from spectralearth.stages.statistics import read_statistics

    curated, out = Path(curated), Path(out)
    rank_zero = is_global_zero()
    band_stats, stats_file = read_statistics(curated, stats)
    if rank_zero:
        mlf.check_store(tracking)
    lineage = {
        "data": str(curated.resolve()),
        "data_version": mlf.data_version(curated),
        "git_commit": mlf.git_commit(),
        "dagster_run_id": dagster_run_id or "none",
    }
    layout = CheckpointLayout(out)
    staging = CheckpointLayout(out.parent / f".{out.name}.staging")
    run_id = model_id = failure = None
    outcome: dict = {}
    with StageUsage() as usage:
        try:
            if rank_zero:
                keeps_checkpoints = settings.checkpoint_every_n_steps > 0 or resume
                _prepare_staging(staging, layout, keeps_checkpoints)
                run_id = mlf.start_run(
                    tracking,
                    run_name=f"pretrain-{settings.method}-{settings.backbone}",
                    tags={"stage": "pretrain", "profile": settings.profile, **lineage},
                )
                # the LoggedModel exists (pending) while it trains; run.json names it
                model_id = mlf.new_encoder_model(tracking, run_id, lineage)
            with mlf.system_metrics(tracking, run_id):
                run = _train(
                    settings,
                    curated,
                    band_stats,
                    staging,
                    tracking,
                    run_id,
                    resume,
                    progress,
                    callbacks,
                )
            if rank_zero:
                outcome = _publish(
                    settings,
                    run,
                    band_stats,
                    stats_file,
                    staging,
                    layout,
                    tracking,
                    run_id,
                    model_id,
                    lineage,
                    curated,
                )
        except BaseException as exc:
            failure = exc
            if rank_zero and run_id is not None:
                mlf.fail_run(tracking, run_id, model_id)
        finally:
            if rank_zero:
                shutil.rmtree(staging.root, ignore_errors=True)
        # every rank waits for rank 0's outcome; a failure on rank 0 fails every rank
        shared = broadcast_from_zero({"error": repr(failure) if failure else None, **outcome})
    if failure is not None:
        raise failure
    if shared["error"]:
        raise RuntimeError(f"pretraining failed on rank 0: {shared['error']}")
    return Pretraining(
        method=settings.method,
        backbone=settings.backbone,
        profile=settings.profile,
        checkpoint=out,
        steps=int(run.steps),
        final_loss=run.final_loss,
        seconds=float(run.seconds or 0.0),
        patches_per_second=run.patches_per_second,
        parameters=int(run.parameters or 0),
        device=str(run.device),
        world_size=int(run.world_size or 1),
        band_stats_source=str(stats_file),
        mlflow_run_id=shared.get("run_id"),
        model_versions=tuple(shared.get("versions", ())),
        collapse=run.collapse.as_json(),
        usage=usage.result,
        mlflow_model_id=outcome.get("model_id"),
        peak_gpu_mb=run.peak_gpu_mb,
        data_wait_share=run.data_wait_share,
    )


def _prepare_staging(
    staging: CheckpointLayout, layout: CheckpointLayout, keeps_checkpoints: bool
) -> None:
    """An empty staging folder whose ``checkpoints`` is the output folder's own (so
    resumable checkpoints survive a failed run)."""
    shutil.rmtree(staging.root, ignore_errors=True)
    staging.root.mkdir(parents=True)
    if keeps_checkpoints or layout.checkpoints.is_dir():
        layout.checkpoints.mkdir(parents=True, exist_ok=True)
        os.symlink(layout.checkpoints.resolve(), staging.checkpoints, target_is_directory=True)


def _train(
    settings, curated, band_stats, staging, tracking, run_id, resume, progress, callbacks
) -> dict:
    from spectralearth import tracking as mlf
    from spectralearth.ssl.train import pretrain as train

    logger = mlf.lightning_logger(tracking, run_id) if run_id is not None else None
    return train(
        settings,
        Path(curated) / "shards",
        band_stats,
        staging.root,
        logger=logger,
        resume=resume,
        progress=progress,
        callbacks=callbacks,
    )


def _publish(
    settings, run, band_stats, stats_file, staging, layout, tracking, run_id, model_id, lineage,
    curated,
) -> dict:  # fmt: skip
    """Rank 0: record what the checkpoint needs, log and register it, then swap it in."""
    from spectralearth import tracking as mlf
    from spectralearth.io import atomic_write_text, fsync_dirs
    from spectralearth.plots import loss_curve

    loss_curve(
        list(run.loss_history),
        staging.loss_curve,
        title=f"{settings.method} {settings.backbone}",
        method=settings.method,
        memory_bank_size=settings.memory_bank_size,
        batch_size=settings.batch_size // max(1, settings.accumulate_grad_batches),
    )
    record = json.loads(staging.run.read_text())
    record.pop("bands", None)  # in_chans says it
    record.update(
        format_version=RUN_FORMAT_VERSION,
        band_stats={
            "mean": list(band_stats["mean"]),
            "std": list(band_stats["std"]),
            "source": str(stats_file),
        },
        source={"kind": "trained", **lineage},
        mlflow_run_id=run_id,
        mlflow_model_id=model_id,
    )
    atomic_write_text(staging.run, json.dumps(record, indent=2) + "\n")
    params = {k: v for k, v in dataclasses.asdict(settings).items() if v is not None}
    metrics = {
        k: getattr(run, k) for k in ("final_loss", "seconds", "patches_per_second", "parameters")
    }
    # the weights and run.json travel in the LoggedModel (register_checkpoint), not twice
    artifacts = [("figures", staging.loss_curve)]
    mlf.log_pretraining(tracking, run_id, params, metrics, artifacts, curated=curated)
    registration = mlf.register_checkpoint(
        tracking,
        run_id,
        model_id,
        staging.root,
        settings.method,
        settings.backbone,
        lineage,
        checkpoint_name=layout.name,
    )
    versions = registration.versions
    record["model_versions"] = versions
    record["mlflow_model_uri"] = registration.model_uri
    atomic_write_text(staging.run, json.dumps(record, indent=2) + "\n")
    # swap in: weights and figure first, run.json (what makes the folder a checkpoint) last
    layout.root.mkdir(parents=True, exist_ok=True)
    for src, dst in (
        (staging.weights, layout.weights),
        (staging.loss_curve, layout.loss_curve),
        (staging.run, layout.run),
    ):
        if src.is_file():
            os.replace(src, dst)
    fsync_dirs([layout.root])
    return {"run_id": run_id, "model_id": model_id, "versions": sorted(versions.items())}
