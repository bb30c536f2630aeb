"""The pretraining stage: curated shards + band statistics -> an encoder checkpoint folder.

Output folder (read back by ``spectralearth.models.load_pretrained``):

- ``model.safetensors``: the trained encoder's state_dict (spectral adapter included);
- ``run.json``: method, backbone, in_chans, bands, wavelengths, steps, final_loss,
  loss_history, seconds, patches_per_second, device, seed, profile and the full settings
  (written last);
- ``checkpoints/``: resumable Lightning checkpoints when ``checkpoint_every_n_steps`` > 0.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from ..config import PretrainSettings
from ..io import atomic_path, atomic_write_text
from .registry import get_method

WEIGHTS_FILE = "model.safetensors"
RUN_FILE = "run.json"


CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


def micro_batch_size(settings: PretrainSettings, world_size: int) -> int:
    """Per-device batch: the global ``batch_size`` over devices x nodes x accumulation."""
    parts = max(1, int(world_size)) * max(1, int(settings.accumulate_grad_batches))
    if settings.batch_size % parts or settings.batch_size < parts:
        raise ValueError(
            f"global batch_size {settings.batch_size} does not split into {world_size} "
            f"device(s) x {settings.accumulate_grad_batches} accumulation step(s)"
        )
    return settings.batch_size // parts


def _training_data(data: Path, stats: dict, settings: PretrainSettings, two_views: bool):
    """The train split of ``data`` (a curated folder, an indexed released tree, or legacy
    shards: ``open_training_source``), checked against the index and the statistics, one
    random date (or a two-date pair) per location and epoch, raw int16. Statistics that
    record another index version than the data's are refused (``check_stats``); statistics
    without one (SpectralEarth's published values) are used as given."""
    from ..data.dataset import PatchDataset

    dataset = PatchDataset(
        data,
        split="train",
        stats=stats,
        two_dates=two_views,
        per_location=True,  # one random date per location per epoch
        seed=settings.seed,
        normalize=False,  # int16 through the loader; BandNormalize runs on the device
    )
    if len(dataset) == 0:
        raise ValueError(f"no training data: the 'train' split of {data} is empty")
    version = getattr(dataset.source, "version", None)
    if version and stats.get("index_version") not in (None, version):
        from ..patches.stats import check_stats

        check_stats(dataset.source.root, stats)  # raises, naming the command that fixes it
    return dataset


def _loader(dataset, settings: PretrainSettings, batch_size: int, rank: int, world_size: int):
    """Shuffled batches of ``batch_size`` for this device, read straight from the store by
    ``num_workers`` threads (``PatchBatchLoader``: a batch is a file read into the batch
    array, cheaper than shipping it from worker processes; benchmarks/bench_loader.py). Each
    rank takes its own slice of the same per-epoch permutation."""
    from ..data.dataset import PatchBatchLoader

    world_size = max(1, int(world_size))
    n = len(dataset)
    return PatchBatchLoader(
        dataset,
        batch_size,
        num_workers=settings.num_workers,
        seed=settings.seed,
        rank=rank,
        world_size=world_size,
        pin_memory=settings.accelerator not in ("cpu",),
        # fewer items than one batch per device: draw one batch per device with replacement
        replacement_to=batch_size * world_size if n < batch_size * world_size else None,
    )


def _check_settings(settings: PretrainSettings) -> None:
    if settings.steps <= 0 and settings.epochs <= 0:
        raise ValueError("pretrain: set steps > 0 or epochs > 0 in the profile")
    if settings.accumulate_grad_batches < 1:
        raise ValueError("pretrain: accumulate_grad_batches must be >= 1")
    if settings.checkpoint_every_n_steps < 0:
        raise ValueError("pretrain: checkpoint_every_n_steps must be >= 0 (0 = off)")


def _atomic_checkpoint_io():
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Checkpoints written to a temporary name and renamed into place: a run killed
        while saving leaves the previous ``last.ckpt`` whole."""

        def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
            try:
                with atomic_path(path) as tmp:
                    super().save_checkpoint(checkpoint, tmp, storage_options)
            except OSError as exc:
                kept = Path(path)
                step = checkpoint.get("global_step", "?")
                raise CheckpointWriteError(
                    f"could not write the checkpoint of step {step} to {kept}: "
                    f"{exc.strerror or exc}. "
                    + (
                        f"The last good checkpoint {kept} is kept; "
                        if kept.is_file()
                        else "No earlier checkpoint exists; "
                    )
                    + "free space or fix permissions, then rerun with --resume."
                ) from exc

    return AtomicCheckpointIO()


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, read-only target...): the run stops,
    and the previous checkpoint, written atomically, is left whole."""


def last_checkpoint(out_dir: Path) -> Path | None:
    """``OUT_DIR/checkpoints/last.ckpt`` when a run wrote one, else None."""
    path = Path(out_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
    return path if path.exists() else None


def pretrain(
    settings: PretrainSettings,
    shards_dir: Path,
    stats: dict,
    out_dir: Path,
    logger=None,
    progress: bool = True,
    resume: bool = False,
    callbacks: list | None = None,
) -> dict:
    """Pretrain ``settings.backbone`` with ``settings.method`` on the train split.

    ``logger`` is any ``lightning.pytorch`` logger (e.g. ``MLFlowLogger``); it receives
    ``train_loss`` and ``lr`` every step and the method's hyperparameters.

    Engine: ``batch_size`` is the global batch (split over devices, nodes and
    ``accumulate_grad_batches``); with ``checkpoint_every_n_steps`` > 0 a resumable
    Lightning checkpoint is written to ``OUT_DIR/checkpoints`` every N optimizer steps
    (``last.ckpt``, replaced atomically: a killed run leaves the previous one whole); ``resume=True``
    continues from ``last.ckpt`` (step, optimizer and scheduler state, EMA encoders, MoCo
    queue), or starts afresh when there is none. A NaN/inf loss raises
    :class:`~spectralearth.ssl.base.NonFiniteLossError` naming the step. Seeded:
    ``seed_everything(seed)`` and deterministic algorithms where torch has them.

    Returns the ``run.json`` dict.
    """
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from safetensors.torch import save_file

    from ..data.dataset import BandNormalize
    from ..models import create_model

    shards_dir, out_dir = Path(shards_dir), Path(out_dir)
    _check_settings(settings)
    method_cls = get_method(settings.method)
    pl.seed_everything(settings.seed, workers=True)

    dataset = _training_data(shards_dir, stats, settings, method_cls.two_views)
    n_bands = dataset.n_bands
    if settings.crop_size > dataset.patch_size:
        raise ValueError(
            f"crop_size {settings.crop_size} is larger than the {dataset.patch_size} px patches"
        )

    encoder = create_model(settings.backbone, in_chans=n_bands)
    module = method_cls.from_settings(encoder, settings)
    module.normalize = BandNormalize(stats)

    loader = None  # built once the trainer knows this process's rank

    class _SetEpoch(pl.Callback):
        """A new permutation and new two-date pairs each epoch (both seeded by epoch)."""

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            loader.set_epoch(trainer.current_epoch)

    ckpt_dir = out_dir / CHECKPOINT_DIR
    all_callbacks: list = [_SetEpoch(), *(callbacks or [])]
    every = int(settings.checkpoint_every_n_steps)
    if every > 0:
        all_callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                every_n_train_steps=every,
                save_top_k=0,  # only OUT_DIR/checkpoints/last.ckpt, replaced every N steps
                save_last=True,
                enable_version_counter=False,
                save_on_train_epoch_end=False,
            )
        )
    epochs = int(settings.epochs)
    trainer = pl.Trainer(
        max_steps=-1 if epochs > 0 else settings.steps,
        max_epochs=epochs if epochs > 0 else -1,
        precision=settings.precision,
        accelerator=settings.accelerator,
        devices=settings.devices,
        num_nodes=settings.num_nodes,
        strategy=settings.strategy,
        accumulate_grad_batches=settings.accumulate_grad_batches,
        gradient_clip_val=settings.gradient_clip_val or None,
        logger=logger if logger is not None else False,
        enable_checkpointing=every > 0,
        log_every_n_steps=1,
        deterministic="warn",  # deterministic algorithms where torch has them
        enable_progress_bar=progress,
        enable_model_summary=progress,
        num_sanity_val_steps=0,
        callbacks=all_callbacks,
        default_root_dir=out_dir,
        plugins=[_atomic_checkpoint_io()],
    )
    world_size = int(trainer.num_devices) * int(trainer.num_nodes)
    micro_batch = micro_batch_size(settings, world_size)

    ckpt_path = None
    if resume:
        found = last_checkpoint(out_dir)
        if found is not None:
            ckpt_path = str(found)
        elif trainer.is_global_zero:
            print(f"pretrain: no checkpoint in {ckpt_dir} to resume from; starting afresh")
    start = time.perf_counter()
    loader = _loader(dataset, settings, micro_batch, trainer.global_rank, world_size)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - start

    losses = [float(v) for v in module.loss_history]
    start_step = int(getattr(module, "start_step", 0))
    steps_run = int(trainer.global_step) - start_step
    run = {
        "method": settings.method,
        "backbone": settings.backbone,
        "in_chans": int(n_bands),
        "bands": int(n_bands),
        "wavelengths": list((stats or {}).get("wavelengths") or []),
        "num_features": int(encoder.num_features),
        "parameters": int(sum(p.numel() for p in encoder.parameters())),
        "steps": int(trainer.global_step),
        "resumed_from_step": start_step if ckpt_path else None,
        "final_loss": losses[-1] if losses else None,
        "loss_history": losses,
        "seconds": round(seconds, 3),
        "patches_per_second": round(steps_run * settings.batch_size / seconds, 3)
        if seconds > 0
        else None,
        "global_batch_size": settings.batch_size,
        "micro_batch_size": micro_batch,
        "world_size": world_size,
        "device": str(trainer.strategy.root_device),
        "seed": settings.seed,
        "profile": settings.profile,
        "train_items": len(dataset),
        "train_patches": dataset.n_patches,
        "train_locations": dataset.n_locations,
        "settings": dataclasses.asdict(settings),
        "hparams": {k: v for k, v in module.hparams.items()},
        "versions": {"torch": torch.__version__, "lightning": pl.__version__},
    }
    if trainer.is_global_zero:
        state = {k: v.detach().cpu().contiguous() for k, v in module.encoder.state_dict().items()}
        meta = {"backbone": settings.backbone, "in_chans": str(n_bands), "method": settings.method}
        with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata=meta)
        atomic_write_text(out_dir / RUN_FILE, json.dumps(run, indent=2) + "\n")
    return run
