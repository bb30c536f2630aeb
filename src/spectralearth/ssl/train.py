"""The pretraining stage: curated shards + band statistics -> an encoder checkpoint folder.

Output folder (read back by ``spectralearth.models.load_pretrained``):

- ``model.safetensors``: the trained encoder's state_dict (spectral adapter included);
- ``run.json``: method, backbone, in_chans, bands, wavelengths, steps, final_loss,
  loss_history, seconds, seed, profile and the full settings (written last).
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


def _loader(dataset, settings: PretrainSettings):
    from torch.utils.data import DataLoader, RandomSampler

    n, bs = len(dataset), settings.batch_size
    common = dict(
        batch_size=bs,
        num_workers=settings.num_workers,
        drop_last=True,
        pin_memory=settings.accelerator not in ("cpu",),
    )
    if n >= bs:
        return DataLoader(dataset, shuffle=True, **common)
    # Fewer training items than one batch: draw a full batch with replacement.
    return DataLoader(
        dataset, sampler=RandomSampler(dataset, replacement=True, num_samples=bs), **common
    )


def pretrain(
    settings: PretrainSettings,
    shards_dir: Path,
    stats: dict,
    out_dir: Path,
    logger=None,
    progress: bool = True,
) -> dict:
    """Pretrain ``settings.backbone`` with ``settings.method`` on the train split.

    ``logger`` is any ``lightning.pytorch`` logger (e.g. ``MLFlowLogger``); it receives
    ``train_loss`` and ``lr`` every step and the method's hyperparameters. Returns the
    ``run.json`` dict.
    """
    import lightning.pytorch as pl
    import torch
    from safetensors.torch import save_file

    from ..data.shards import BandNormalize, ShardPatches
    from ..models import create_model

    shards_dir, out_dir = Path(shards_dir), Path(out_dir)
    method_cls = get_method(settings.method)
    pl.seed_everything(settings.seed, workers=True)

    dataset = ShardPatches(
        shards_dir,
        split="train",
        stats=stats,
        two_dates=method_cls.two_views,
        seed=settings.seed,
        normalize=False,  # int16 through the loader; BandNormalize runs on the device
    )
    if len(dataset) == 0:
        raise ValueError(
            f"no training data: the 'train' split of {shards_dir / 'manifest.parquet'} is empty"
        )
    n_bands = dataset.n_bands
    if settings.crop_size > dataset.patch_size:
        raise ValueError(
            f"crop_size {settings.crop_size} is larger than the {dataset.patch_size} px patches"
        )

    encoder = create_model(settings.backbone, in_chans=n_bands)
    module = method_cls.from_settings(encoder, settings)
    module.normalize = BandNormalize(stats)

    class _SetEpoch(pl.Callback):
        """New two-date pairs each epoch (ShardPatches seeds its draws by epoch)."""

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            dataset.set_epoch(trainer.current_epoch)

    trainer = pl.Trainer(
        max_steps=settings.steps,
        precision=settings.precision,
        accelerator=settings.accelerator,
        devices=settings.devices,
        logger=logger if logger is not None else False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        deterministic="warn",  # deterministic algorithms where torch has them
        enable_progress_bar=progress,
        enable_model_summary=progress,
        num_sanity_val_steps=0,
        callbacks=[_SetEpoch()],
        default_root_dir=out_dir,
    )
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=_loader(dataset, settings))
    seconds = time.perf_counter() - start

    losses = [float(v) for v in module.loss_history]
    run = {
        "method": settings.method,
        "backbone": settings.backbone,
        "in_chans": int(n_bands),
        "bands": int(n_bands),
        "wavelengths": list((stats or {}).get("wavelengths") or []),
        "num_features": int(encoder.num_features),
        "steps": int(trainer.global_step),
        "final_loss": losses[-1] if losses else None,
        "loss_history": losses,
        "seconds": round(seconds, 3),
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
