"""The pretraining stage: curated shards + band statistics -> an encoder checkpoint folder.

Output folder (:class:`~spectralearth.layout.CheckpointLayout`, read back by
``spectralearth.models.load_pretrained``), written by global rank 0 only:

- ``model.safetensors``: the trained encoder's state_dict (spectral adapter included);
- ``run.json``: :class:`PretrainRun` (``format_version`` 2): method, backbone, in_chans,
  wavelengths, steps, final_loss, loss_history, seconds, patches_per_second, device,
  world_size, the collapse summary, seed, profile, the full settings, ``peak_gpu_mb``
  (``torch.cuda.max_memory_allocated`` of rank 0's GPU during ``fit``; under DDP each rank
  has its own GPU and this is rank 0's; null on the CPU) and ``data_wait_seconds`` /
  ``data_wait_share`` (how long rank 0's training loop waited for its loader, and that
  time's share of ``seconds``) (written last);
- ``checkpoints/last.ckpt``: resumable Lightning checkpoints when
  ``checkpoint_every_n_steps`` > 0.

``pretrain`` reads as its steps: check the settings, build the trainer, the training data,
the model; check a checkpoint to resume from; fit; record the run; rank 0 publishes it and
every rank returns the same :class:`PretrainRun`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import PretrainSettings
from ..io import atomic_path, atomic_write_text
from ..layout import CheckpointLayout
from .collapse import CollapseSummary, summarise, warn_if_collapsed
from .distributed import broadcast_buffers_from_zero, broadcast_from_zero
from .registry import get_method

WEIGHTS_FILE = "model.safetensors"
RUN_FILE = "run.json"
FORMAT_VERSION = 2  # run.json: 2 = no duplicate "bands" (in_chans), a "collapse" summary

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


@dataclass(frozen=True)
class PretrainRun:
    """What a pretraining run did: the content of its ``run.json`` (``as_json()``)."""

    method: str
    backbone: str
    in_chans: int
    wavelengths: tuple[float, ...]
    num_features: int
    parameters: int
    steps: int  # the optimizer step the run ended at (a resumed run counts from 0)
    resumed_from_step: int | None
    final_loss: float | None  # None when no step ran
    loss_history: tuple[float, ...]  # the global batch's loss of every step of this fit
    seconds: float
    patches_per_second: float | None
    global_batch_size: int
    micro_batch_size: int
    world_size: int
    device: str
    seed: int
    profile: str
    train_items: int
    train_patches: int
    train_locations: int
    collapse: CollapseSummary
    # torch.cuda.max_memory_allocated of the training process's GPU during fit, in MB; under
    # DDP every rank has its own GPU and this is rank 0's (the record is rank 0's); None on CPU
    peak_gpu_mb: float | None = None
    # rank 0's training loop blocked on its loader (seconds), and that time over `seconds`
    data_wait_seconds: float | None = None
    data_wait_share: float | None = None
    settings: dict = field(default_factory=dict)
    hparams: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def as_json(self) -> dict:
        """The ``run.json`` dict (JSON types only)."""
        data = {"format_version": self.format_version}
        for f in dataclasses.fields(self):
            if f.name != "format_version":
                data[f.name] = getattr(self, f.name)
        data["collapse"] = self.collapse.as_json()
        return _jsonable(data)

    # Read access by key, for callers written when pretrain returned the run.json dict
    # (pipeline.pretrain, tracking.finish_pretraining): ``run["steps"]``, ``run.get(...)``,
    # ``{**run}``. New code reads the attributes.
    def keys(self):
        return self.as_json().keys()

    def __getitem__(self, key: str) -> Any:
        return self.as_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_json().get(key, default)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, Path):
        return str(value)
    return value


class CheckpointMismatchError(ValueError):
    """``--resume`` found a checkpoint of another method, backbone or band count."""


class CropSizeError(ValueError):
    """The profile's crop is larger than the curated patches."""


def micro_batch_size(settings: PretrainSettings, world_size: int) -> int:
    """Per-device batch: the global ``batch_size`` over devices x nodes x accumulation."""
    parts = max(1, int(world_size)) * max(1, int(settings.accumulate_grad_batches))
    if settings.batch_size % parts or settings.batch_size < parts:
        raise ValueError(
            f"global batch_size {settings.batch_size} does not split into {world_size} "
            f"device(s) x {settings.accumulate_grad_batches} accumulation step(s)"
        )
    return settings.batch_size // parts


def training_data(
    settings: PretrainSettings,
    shards_dir: Path,
    stats: dict,
    two_views: bool,
    batch_size: int,
    rank: int,
    world_size: int,
):
    """The train split and this device's loader over it: ``(dataset, loader)``.

    ``shards_dir``: the training data, any path ``open_training_source`` takes (a curated
    folder, an indexed released tree, legacy shards; a curated folder's ``shards/`` path is
    read as the folder), checked against its index. Statistics that record another index
    version than the data's are refused (``check_stats``); statistics without one
    (SpectralEarth's published values) are used as given. One item per location per epoch
    (a random date; two dates for ``two_views``), int16 through the loader
    (``BandNormalize`` runs on the device). Shuffled batches of ``batch_size`` are read
    straight from the store by ``num_workers`` threads (``PatchBatchLoader``: a batch is a
    memory copy out of the page cache, cheaper than shipping it from worker processes;
    benchmarks/bench_loader.py). Each rank takes its own slice of the same per-epoch
    permutation.
    """
    from ..data.dataset import PatchBatchLoader, PatchDataset

    dataset = PatchDataset(
        shards_dir,
        split="train",
        stats=stats,
        two_dates=two_views,
        per_location=True,  # one random date per location per epoch
        seed=settings.seed,
        normalize=False,  # int16 through the loader; BandNormalize runs on the device
    )
    if len(dataset) == 0:
        raise ValueError(f"no training data: the 'train' split of {shards_dir} is empty")
    version = getattr(dataset.source, "version", None)
    if version and stats.get("index_version") not in (None, version):
        from ..patches.stats import check_stats

        check_stats(dataset.source.root, stats)  # raises, naming the command that fixes it
    world_size = max(1, int(world_size))
    n = len(dataset)
    loader = PatchBatchLoader(
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
    return dataset, loader


def _check_settings(settings: PretrainSettings) -> None:
    if settings.steps <= 0 and settings.epochs <= 0:
        raise ValueError("pretrain: set steps > 0 or epochs > 0 in the profile")
    if settings.accumulate_grad_batches < 1:
        raise ValueError("pretrain: accumulate_grad_batches must be >= 1")
    if settings.checkpoint_every_n_steps < 0:
        raise ValueError("pretrain: checkpoint_every_n_steps must be >= 0 (0 = off)")


def _check_crop(settings: PretrainSettings, patch_size: int, shards_dir: Path) -> None:
    if settings.crop_size > patch_size:
        raise CropSizeError(
            f"crop_size {settings.crop_size} is larger than the {patch_size} px patches of "
            f"{Path(shards_dir) / 'manifest.parquet'}: the crops are cut from the patches. "
            f"Set crop_size to {patch_size} or less: the profile key crop_size "
            f"(params.yaml pretrain.profiles.{settings.profile}.crop_size) or "
            f"--crop-size {patch_size} on the command line."
        )


def _check_micro_batch(settings: PretrainSettings, module, micro_batch: int, world: int) -> None:
    import torch

    if micro_batch < 2 and any(isinstance(m, torch.nn.BatchNorm1d) for m in module.modules()):
        raise ValueError(
            f"pretrain: {settings.method} has a BatchNorm projection head, which needs at "
            f"least 2 samples per device, but the global batch_size {settings.batch_size} "
            f"over {world} device(s) x {settings.accumulate_grad_batches} accumulation "
            "step(s) leaves 1: raise batch_size or lower accumulate_grad_batches."
        )


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
    """``OUT_DIR/checkpoints/last.ckpt`` when a run wrote one, else None. Resolved: the
    pretrain stage trains in a staging folder whose ``checkpoints`` links to the output
    folder's own, and messages must name the file the user has."""
    path = Path(out_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
    return path.resolve() if path.exists() else None


def _method_from_keys(state_dict: dict) -> str | None:
    """The method of a checkpoint written before it recorded one (its module layout)."""
    for prefix, method in (("key_encoder.", "moco"), ("teacher_encoder.", "dino")):
        if any(k.startswith(prefix) for k in state_dict):
            return method
    return "mae" if any(k.startswith("decoder.") for k in state_dict) else None


def _describe(identity: dict) -> str:
    method = identity.get("method") or "unknown-method"
    backbone = identity.get("backbone") or "(backbone not recorded)"
    return f"{method} {backbone}"


def _bands(identity: dict) -> str:
    return f" on {identity['in_chans']} bands" if identity.get("in_chans") else ""


def check_resumable(path: Path, module) -> int:
    """The step of the Lightning checkpoint ``path`` when ``module`` can resume from it.

    Raises :class:`CheckpointMismatchError` naming the file, what it holds (method,
    backbone and bands recorded in it, or read from its weights) and what this run asks
    for, when they differ or its weights do not fit, or when it cannot be read. Read with
    ``weights_only=True``, as Lightning reads it.
    """
    import torch

    from .base import CHECKPOINT_META

    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a checkpoint, or a pickle that needs code
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointMismatchError(
            f"cannot resume from {path}: it cannot be read as a Lightning checkpoint "
            f"({reason}). Remove it to start afresh in {path.parent.parent}, or give another "
            "--out folder."
        ) from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointMismatchError(
            f"cannot resume from {path}: it holds no Lightning state_dict. Remove it to start "
            f"afresh in {path.parent.parent}, or give another --out folder."
        )
    weights = ckpt["state_dict"]
    held = dict(ckpt.get(CHECKPOINT_META) or {})
    held.setdefault("method", _method_from_keys(weights))
    asked = module.identity()
    theirs = {k: tuple(v.shape) for k, v in weights.items() if hasattr(v, "shape")}
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    other = [
        k
        for k in ("method", "backbone", "in_chans")
        if held.get(k) is not None and asked.get(k) is not None and held[k] != asked[k]
    ]
    if not differ and not other:
        return int(ckpt.get("global_step", 0))
    step = ckpt.get("global_step", "?")
    detail = f" ({len(differ)} of {len(ours)} weights differ in name or shape, e.g. {differ[0]})"
    if held.get("method") and held.get("backbone"):
        resume_hint = f"resume with --method {held['method']} --backbone {held['backbone']}"
    else:
        resume_hint = "resume with the --method and --backbone of that run"
    raise CheckpointMismatchError(
        f"cannot resume from {path}: it holds step {step} of a {_describe(held)} run"
        f"{_bands(held)}, but this run asks for {_describe(asked)}{_bands(asked)}"
        f"{detail if differ else ''}. To continue that run, {resume_hint}; to start a "
        f"{_describe(asked)} run instead, give another --out folder. Nothing was written "
        f"to {path.parent.parent}."
    )


class TimedLoader:
    """The training loader, counting the time the training loop waits for its batches
    (``wait_seconds``): what a GPU spends idle when the loader cannot keep up. Everything
    else (``len``, ``set_epoch``, attributes) is the wrapped loader's."""

    def __init__(self, loader) -> None:
        self.loader = loader
        self.wait_seconds = 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        if name == "loader":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self):
        batches = iter(self.loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                self.wait_seconds += time.perf_counter() - start
            yield batch


def _new_epoch_callback():
    """A callback giving its ``loader`` (set once built) a new permutation and new
    two-date pairs each epoch (both seeded by the epoch)."""
    import lightning.pytorch as pl

    class NewEpoch(pl.Callback):
        loader = None

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.loader.set_epoch(trainer.current_epoch)

    return NewEpoch()


def _trainer(settings: PretrainSettings, out: CheckpointLayout, logger, progress, callbacks):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    every = int(settings.checkpoint_every_n_steps)
    callbacks = list(callbacks)
    if every > 0:
        callbacks.append(
            ModelCheckpoint(
                dirpath=out.checkpoints,
                every_n_train_steps=every,
                save_top_k=0,  # only OUT_DIR/checkpoints/last.ckpt, replaced every N steps
                save_last=True,
                enable_version_counter=False,
                save_on_train_epoch_end=False,
            )
        )
    epochs = int(settings.epochs)
    return pl.Trainer(
        max_steps=-1 if epochs > 0 else settings.steps,
        max_epochs=epochs if epochs > 0 else -1,
        precision=settings.precision,
        accelerator=settings.accelerator,
        devices=settings.devices,
        num_nodes=settings.num_nodes,
        strategy=settings.strategy,
        sync_batchnorm=settings.sync_batchnorm,
        accumulate_grad_batches=settings.accumulate_grad_batches,
        gradient_clip_val=settings.gradient_clip_val or None,
        logger=logger if logger is not None else False,
        enable_checkpointing=every > 0,
        log_every_n_steps=1,
        deterministic="warn",  # deterministic algorithms where torch has them
        enable_progress_bar=progress,
        enable_model_summary=progress,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        default_root_dir=out.root,
        plugins=[_atomic_checkpoint_io()],
    )


def _record(
    settings: PretrainSettings,
    module,
    dataset,
    trainer,
    stats: dict,
    *,
    micro_batch: int,
    world_size: int,
    seconds: float,
    resumed: bool,
    peak_gpu_mb: float | None = None,
    data_wait_seconds: float | None = None,
) -> PretrainRun:
    import lightning.pytorch as pl
    import torch

    encoder = module.encoder
    losses = tuple(float(v) for v in module.loss_history)
    start_step = int(getattr(module, "start_step", 0))
    steps_run = int(trainer.global_step) - start_step
    collapse = summarise(
        module.feature_std_history,
        module.effective_rank_history,
        module.embedding_dim or int(encoder.num_features),
        settings.collapse_std_fraction,
    )
    return PretrainRun(
        method=settings.method,
        backbone=settings.backbone,
        in_chans=int(dataset.n_bands),
        wavelengths=tuple(float(w) for w in (stats or {}).get("wavelengths") or []),
        num_features=int(encoder.num_features),
        parameters=int(sum(p.numel() for p in encoder.parameters())),
        steps=int(trainer.global_step),
        resumed_from_step=start_step if resumed else None,
        final_loss=losses[-1] if losses else None,
        loss_history=losses,
        seconds=round(seconds, 3),
        patches_per_second=round(steps_run * settings.batch_size / seconds, 3)
        if seconds > 0
        else None,
        global_batch_size=settings.batch_size,
        micro_batch_size=micro_batch,
        world_size=world_size,
        device=str(trainer.strategy.root_device),
        seed=settings.seed,
        profile=settings.profile,
        train_items=len(dataset),
        train_patches=int(dataset.n_patches),
        train_locations=int(dataset.n_locations),
        collapse=collapse,
        peak_gpu_mb=None if peak_gpu_mb is None else round(peak_gpu_mb, 1),
        data_wait_seconds=None if data_wait_seconds is None else round(data_wait_seconds, 3),
        data_wait_share=round(data_wait_seconds / seconds, 4)
        if data_wait_seconds is not None and seconds > 0
        else None,
        settings=_jsonable(dataclasses.asdict(settings)),
        hparams=_jsonable(dict(module.hparams)),
        versions={"torch": torch.__version__, "lightning": pl.__version__},
    )


def _publish(out: CheckpointLayout, encoder, run: PretrainRun) -> None:
    """Write the weights, then run.json (last: its presence means the folder is whole)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    meta = {"backbone": run.backbone, "in_chans": str(run.in_chans), "method": run.method}
    with atomic_path(out.weights) as tmp:
        save_file(state, str(tmp), metadata=meta)
    atomic_write_text(out.run, json.dumps(run.as_json(), indent=2) + "\n")


def _publish_on_rank_zero(trainer, out: CheckpointLayout, encoder, run: PretrainRun):
    """Rank 0 writes ``out``; every rank waits for it and returns rank 0's record.

    A failed write raises on rank 0 and, naming rank 0's error, on the others (instead of
    leaving them waiting at the barrier)."""
    failure = None
    if trainer.is_global_zero:
        try:
            _publish(out, encoder, run)
        except BaseException as exc:
            failure = exc
    status, record = broadcast_from_zero(
        (None if failure is None else f"{type(failure).__name__}: {failure}", run)
    )
    if failure is not None:
        raise failure
    if status is not None:
        raise RuntimeError(f"rank 0 could not write the checkpoint folder {out.root}: {status}")
    return record


def pretrain(
    settings: PretrainSettings,
    shards_dir: Path,
    stats: dict,
    out_dir: Path,
    logger=None,
    progress: bool = True,
    resume: bool = False,
    callbacks: list | None = None,
) -> PretrainRun:
    """Pretrain ``settings.backbone`` with ``settings.method`` on the train split.

    ``logger`` is any ``lightning.pytorch`` logger (e.g. ``MLFlowLogger``); it receives
    ``train_loss``, ``lr``, ``feature_std`` and ``effective_rank`` every step and the
    method's hyperparameters.

    Engine: ``batch_size`` is the global batch (split over devices, nodes and
    ``accumulate_grad_batches``); with ``checkpoint_every_n_steps`` > 0 a resumable
    Lightning checkpoint is written to ``OUT_DIR/checkpoints`` every N optimizer steps
    (``last.ckpt``, replaced atomically: a killed run leaves the previous one whole);
    ``resume=True`` continues from ``last.ckpt`` (step, optimizer and scheduler state, EMA
    encoders, MoCo queue) after checking it is a checkpoint of this method, backbone and
    band count (:class:`CheckpointMismatchError` otherwise), or starts afresh when there is
    none. A NaN/inf loss raises :class:`~spectralearth.ssl.base.NonFiniteLossError` naming
    the step; a crop larger than the patches :class:`CropSizeError`. Seeded:
    ``seed_everything(seed)`` and deterministic algorithms where torch has them.

    Under several processes (torchrun, DDP) only global rank 0 writes ``out_dir``; every
    rank waits for it and returns the same :class:`PretrainRun`. A collapsed representation
    (:mod:`spectralearth.ssl.collapse`) gives a ``RepresentationCollapseWarning``.
    """
    import lightning.pytorch as pl
    import torch

    from ..data.shards import BandNormalize
    from ..models import create_model

    shards_dir, out = Path(shards_dir), CheckpointLayout(out_dir)
    _check_settings(settings)
    method_cls = get_method(settings.method)

    new_epoch = _new_epoch_callback()
    trainer = _trainer(settings, out, logger, progress, [new_epoch, *(callbacks or [])])
    world_size = int(trainer.num_devices) * int(trainer.num_nodes)
    micro_batch = micro_batch_size(settings, world_size)
    if settings.sync_batchnorm and world_size > 1 and trainer.strategy.root_device.type == "cpu":
        raise ValueError(
            f"pretrain: sync_batchnorm needs GPUs (torch's SyncBatchNorm has no CPU kernel); "
            f"set sync_batchnorm: false in profile {settings.profile!r} for a CPU run"
        )

    pl.seed_everything(settings.seed, workers=True)
    dataset, loader = training_data(
        settings, shards_dir, stats, method_cls.two_views, micro_batch, trainer.global_rank,
        world_size,
    )  # fmt: skip
    loader = TimedLoader(loader)
    new_epoch.loader = loader
    _check_crop(settings, dataset.patch_size, shards_dir)
    encoder = create_model(settings.backbone, in_chans=dataset.n_bands)
    module = method_cls.from_settings(encoder, settings)
    module.normalize = BandNormalize(stats)
    _check_micro_batch(settings, module, micro_batch, world_size)

    ckpt_path = None
    if resume:
        found = last_checkpoint(out.root)
        if found is not None:
            check_resumable(found, module)
            ckpt_path = str(found)
        elif trainer.is_global_zero:
            where = out.checkpoints.resolve() if out.checkpoints.exists() else out.checkpoints
            print(f"pretrain: no checkpoint in {where} to resume from; starting afresh")

    device = trainer.strategy.root_device  # this rank's device (cuda:LOCAL_RANK under DDP)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - start
    peak_gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    broadcast_buffers_from_zero(module)  # every rank holds the model rank 0 publishes

    run = _record(
        settings,
        module,
        dataset,
        trainer,
        stats,
        micro_batch=micro_batch,
        world_size=world_size,
        seconds=seconds,
        resumed=ckpt_path is not None,
        peak_gpu_mb=peak_gpu_mb,
        data_wait_seconds=loader.wait_seconds,
    )
    run = _publish_on_rank_zero(trainer, out, module.encoder, run)
    if trainer.is_global_zero:
        warn_if_collapsed(run.collapse)
    return run
