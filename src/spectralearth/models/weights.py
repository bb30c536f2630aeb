"""Weights from elsewhere: the SpectralEarth reference code's checkpoints, read safely.

Two kinds of file come in (Braham et al., *SpectralEarth*, IEEE JSTARS 2025; code
github.com/AABNassim/spectral_earth @5084a29):

- a plain backbone state dict (``.pth``/``.pt`` via ``torch.save(model.state_dict())``, or
  ``.safetensors``): the form of the released weights, keys ``spectral_adapter.*`` +
  ``vit_core.*`` (Spec-ViT) or ``resnet.*`` (Spec-ResNet-50), root keys for the plain
  ``vit_small``/``vit_tiny``/``resnet50``;
- a Lightning ``.ckpt`` of the reference's pretraining modules, whose ``state_dict`` holds
  the encoder under a prefix: MoCo ``backbone.`` (query; ``backbone_momentum.`` the key
  encoder), DINO ``teacher_backbone.`` / ``student_backbone.``, MAE ``encoder.vit.`` (the
  Spec-ViT wrapped for lightly's ``MaskedVisionTransformerTIMM``: the same tensors appear
  under several aliases, the adapter moved into the patch embedding, a 1000-class head
  the encoder never uses).

:func:`read_weights` takes the encoder out (:data:`LIGHTNING_LAYOUTS`), maps its keys to
the project's (which for Spec-ViT and Spec-ResNet-50 *are* the reference's), drops the
rest (listed), and loads it strictly into :func:`~spectralearth.models.create_model`'s
model: a file that does not fit is refused, naming the missing and unexpected keys.
Pickles are read with ``torch.load(..., weights_only=True)`` only, so a file that needs
code execution to unpickle is refused, never run. :func:`import_weights` writes the
project's checkpoint folder (``model.safetensors`` + ``run.json``, see
:class:`~spectralearth.layout.CheckpointLayout`) in one rename: nothing is written when
anything fails.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..layout import CheckpointLayout
from ..names import BACKBONE_CONFIGS, DINO, MAE, MOCO, BackboneConfig
from .registry import create_model
from .vit import CORE, LEGACY_CORE

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
STATE_DICT = "state_dict"
UNKNOWN_METHOD = "unknown"
VIEW_BANDS = 202  # the reference's encoders take the 202-band view (spectralearth.bands)


class WeightsError(ValueError):
    """A weights file that cannot be imported; the message starts with the file."""


class UnsafeWeightsError(WeightsError):
    """A pickle that ``torch.load(weights_only=True)`` refused: it needs code execution."""


# --- the reference's Lightning modules ------------------------------------------------


@dataclass(frozen=True)
class ModuleLayout:
    """Where one pretraining module of the reference keeps its encoders.

    ``parts`` maps a part name to the key prefix of that encoder; ``markers`` are key
    prefixes every checkpoint of the module has (all of them, and no other layout's).
    """

    method: str
    parts: Mapping[str, str]
    default: str
    markers: tuple[str, ...]


LIGHTNING_LAYOUTS: tuple[ModuleLayout, ...] = (
    # MoCoModule: query encoder + EMA key encoder, projection heads
    ModuleLayout(
        MOCO,
        {"query": "backbone.", "momentum": "backbone_momentum."},
        "query",
        ("backbone.", "backbone_momentum.", "projection_head."),
    ),
    # DINOModule: EMA teacher (the one DINO evaluates) + student, heads, criterion.center
    ModuleLayout(
        DINO,
        {"teacher": "teacher_backbone.", "student": "student_backbone."},
        "teacher",
        ("teacher_backbone.", "student_backbone."),
    ),
    # MAEModule: lightly's MaskedVisionTransformerTIMM(vit=WrappedVisionTransformer) + decoder
    ModuleLayout(MAE, {"encoder": "encoder.vit."}, "encoder", ("encoder.vit.", "decoder.")),
)

# Keys of a classifier the encoder (num_classes=0) has none of, by backbone family.
_CLASSIFIER = {"vit": (f"{CORE}.head.",), "spec_resnet": ("resnet.fc.",), "timm_resnet": ("fc.",)}


# --- results --------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedWeights:
    """An encoder with the weights of ``source`` (eval mode) and what was done to get it."""

    model: nn.Module
    backbone: str
    in_chans: int
    source: Path
    sha256: str
    format: str  # "state_dict" | "lightning:moco" | "lightning:dino" | "lightning:mae"
    method: str  # moco / dino / mae from the module layout, else "unknown"
    part: str | None
    dropped_keys: tuple[str, ...]
    migrated_keys: int = 0  # keys of earlier spectralearth versions read in the new layout


@dataclass(frozen=True)
class ImportedCheckpoint:
    """What :func:`import_weights` wrote: a checkpoint folder like pretraining's."""

    path: Path
    backbone: str
    method: str
    in_chans: int
    source: Path
    sha256: str
    format: str
    part: str | None
    dropped_keys: tuple[str, ...]
    tensors: int
    parameters: int
    band_stats_source: str | None
    migrated_keys: int = 0
    run: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def layout(self) -> CheckpointLayout:
        return CheckpointLayout(self.path)

    def metadata(self) -> dict[str, Any]:
        """Plain values for a Dagster asset / MLflow tags."""
        return {
            "checkpoint": str(self.path),
            "backbone": self.backbone,
            "method": self.method,
            "in_chans": self.in_chans,
            "source_file": str(self.source),
            "source_sha256": self.sha256,
            "source_format": self.format,
            "part": self.part or "",
            "tensors": self.tensors,
            "parameters": self.parameters,
            "dropped_keys": len(self.dropped_keys),
            "migrated_keys": self.migrated_keys,
            "band_stats": self.band_stats_source or "none",
        }

    def summary(self) -> str:
        """What the CLI prints."""
        part = f", {self.part}" if self.part else ""
        lines = [
            f"imported {self.source} ({self.format}{part}, sha256 {self.sha256[:12]}...)",
            f"  -> {self.path}: {self.backbone}, method {self.method}, {self.in_chans} bands, "
            f"{self.tensors} tensors ({self.parameters:,} parameters) loaded strictly",
            f"  dropped {len(self.dropped_keys)} keys" + _dropped_summary(self.dropped_keys),
            "  band statistics: "
            + (self.band_stats_source or "none recorded (pass --stats to record them)"),
        ]
        if self.migrated_keys:
            lines.append(
                f"  {self.migrated_keys} keys of an earlier spectralearth layout "
                f"('{LEGACY_CORE}.*') read as '{CORE}.*'"
            )
        return "\n".join(lines)


def _dropped_summary(keys: tuple[str, ...]) -> str:
    """``": decoder.* (12), encoder.mask_token (1)"``: dropped keys by their first part."""
    if not keys:
        return ""
    groups: dict[str, int] = {}
    for key in keys:
        head = key.split(".", 1)[0]
        name = f"{head}.*" if "." in key else head
        groups[name] = groups.get(name, 0) + 1
    return ": " + ", ".join(f"{k} ({n})" for k, n in sorted(groups.items()))


# --- reading files --------------------------------------------------------------------


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_file(path: str | os.PathLike) -> Mapping[str, Any]:
    """The file's top-level mapping: safetensors via safetensors, anything else via
    ``torch.load(weights_only=True)``. A refused or unreadable file raises
    :class:`WeightsError` naming it (and never runs code from it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise WeightsError(
                f"{path}: cannot be read as safetensors ({type(e).__name__}: {e}); is it "
                "truncated or not a safetensors file?"
            ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "weights only load failed" in text.lower():
            found = re.search(r"GLOBAL (\S+)", text)
            what = f" (it calls {found.group(1)})" if found else ""
            raise UnsafeWeightsError(
                f"{path}: refused: unpickling it needs code execution{what}, which "
                "torch.load(weights_only=True) does not allow. A backbone state dict or a "
                "Lightning checkpoint holds only tensors and plain values; load this file "
                "with weights_only=False only if you trust where it came from."
            ) from e
        raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint ({e})") from e
    except Exception as e:
        first = str(e).split(". ")[0]
        raise WeightsError(
            f"{path}: cannot be read as a PyTorch checkpoint ({type(e).__name__}: {first}); "
            "is it truncated or not a checkpoint?"
        ) from e
    if not isinstance(obj, Mapping):
        raise WeightsError(
            f"{path}: holds a {type(obj).__name__}, not a state dict or Lightning checkpoint"
        )
    return obj


def _is_state_dict(obj: Mapping[str, Any]) -> bool:
    return bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def select_encoder(
    path: Path, obj: Mapping[str, Any], part: str | None = None
) -> tuple[dict[str, torch.Tensor], str, str, str | None, list[str], str]:
    """``(encoder state dict, format, method, part, dropped keys, the encoder's key prefix
    in the file)`` of a loaded file."""
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        state = obj["state_dict"]
        if not _is_state_dict(state):
            raise WeightsError(f"{path}: its 'state_dict' holds values other than tensors")
        matches = [
            layout
            for layout in LIGHTNING_LAYOUTS
            if all(any(k.startswith(m) for k in state) for m in layout.markers)
        ]
        if len(matches) != 1:
            found = sorted({k.split(".", 1)[0] + "." for k in state})
            known = "; ".join(
                f"{lay.method}: {', '.join(lay.markers)}" for lay in LIGHTNING_LAYOUTS
            )
            what = "unknown" if not matches else "ambiguous"
            raise WeightsError(
                f"{path}: a Lightning checkpoint of an {what} module layout (its state_dict "
                f"has {', '.join(found[:8])}{' ...' if len(found) > 8 else ''}); the reference's "
                f"MoCo, DINO and MAE modules have these key prefixes: {known}"
            )
        layout = matches[0]
        chosen = part or layout.default
        if chosen not in layout.parts:
            raise WeightsError(
                f"{path}: a {layout.method} checkpoint has no part {chosen!r}; "
                f"choose one of {sorted(layout.parts)}"
            )
        prefix = layout.parts[chosen]
        encoder = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        dropped = sorted(k for k in state if not k.startswith(prefix))
        return encoder, f"lightning:{layout.method}", layout.method, chosen, dropped, prefix
    if not _is_state_dict(obj):
        top = ", ".join(sorted(str(k) for k in obj)[:8])
        raise WeightsError(
            f"{path}: neither a state dict (name -> tensor) nor a Lightning checkpoint (a "
            f"'state_dict' entry); its top-level keys: {top}"
        )
    if part is not None:
        raise WeightsError(
            f"{path}: part={part!r} applies to Lightning checkpoints (moco: query/momentum, "
            "dino: teacher/student, mae: encoder); this is a plain state dict"
        )
    method = MAE if any(".original_patch_embed." in k for k in obj) else UNKNOWN_METHOD
    return dict(obj), STATE_DICT, method, None, [], ""


# --- mapping keys -----------------------------------------------------------------------


def _vit_target(key: str) -> tuple[str, bool]:
    """The project key of a reference Spec-ViT / ViT key, and whether it had the legacy
    spectralearth prefix. Handles the MAE wrapper's aliases: ``spec_vit.*`` (the wrapped
    model), root ``blocks.*``/``pos_embed``/... (the wrapper's copies of the ViT's
    attributes, also the plain reference ``vit_small``'s keys), the patch embedding under
    ``patch_embed.original_patch_embed.`` and the adapter under ``patch_embed.spectral_adapter.``."""
    k = key.removeprefix("spec_vit.")
    if k.startswith("spectral_adapter."):
        return k, False
    legacy = False
    if k.startswith(f"{CORE}."):
        k = k[len(CORE) + 1 :]
    elif k.startswith(f"{LEGACY_CORE}."):
        k, legacy = k[len(LEGACY_CORE) + 1 :], True
    if k.startswith("patch_embed.spectral_adapter."):
        return k.removeprefix("patch_embed."), legacy
    if k.startswith("patch_embed.original_patch_embed."):
        k = "patch_embed." + k.removeprefix("patch_embed.original_patch_embed.")
    return f"{CORE}.{k}", legacy


@dataclass(frozen=True)
class MappedState:
    state: dict[str, torch.Tensor]  # project key -> tensor
    sources: dict[str, str]  # project key -> the source key it came from
    dropped: tuple[str, ...]  # aliases and classifier keys left out
    migrated: int


def map_keys(
    path: Path,
    state: Mapping[str, torch.Tensor],
    config: BackboneConfig,
    expected: set[str],
    prefix: str = "",
) -> MappedState:
    """Source keys -> project keys for ``config``'s family. Several source keys naming one
    tensor (the MAE wrapper's aliases) must hold equal tensors (else refused); one is
    kept, the rest are dropped, as are classifier keys the encoder has none of. Keys are
    reported as the file has them (``prefix`` + key)."""
    groups: dict[str, list[str]] = {}
    migrated = 0
    for key in state:
        if config.family == "vit":
            target, legacy = _vit_target(key)
            migrated += legacy
        else:
            target = key
        groups.setdefault(target, []).append(key)
    out: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    dropped: list[str] = []
    classifier = _CLASSIFIER.get(config.family, ())
    for target, keys in groups.items():
        if target not in expected and target.startswith(classifier):
            dropped += [prefix + k for k in keys]  # a classifier (the reference MAE's 1000)
            continue
        keys = sorted(keys, key=lambda k: (len(k), k))
        first = state[keys[0]]
        for other in keys[1:]:
            t = state[other]
            if t.shape != first.shape or not torch.equal(t, first):
                raise WeightsError(
                    f"{path}: {prefix}{keys[0]} and {prefix}{other} are the same weight "
                    f"({target}) in the reference's module layout but hold different values: "
                    "refused (which one the model used cannot be told from the file)"
                )
        out[target] = first
        sources[target] = prefix + keys[0]
        dropped += [prefix + k for k in keys[1:]]
    if migrated:
        log.warning(
            "%s: %d keys in the layout of earlier spectralearth versions ('%s.*') read as "
            "'%s.*' (the SpectralEarth reference layout)",
            path,
            migrated,
            LEGACY_CORE,
            CORE,
        )
    return MappedState(out, sources, tuple(sorted(dropped)), migrated)


# --- strict loading ---------------------------------------------------------------------


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def state_problems(
    expected: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    names: Mapping[str, str] | None = None,
) -> list[str]:
    """What stops ``state`` loading strictly where ``expected`` (a model's state dict) is:
    missing keys, unexpected keys (named as in the file via ``names``), shape mismatches."""
    names = names or {}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(names.get(k, k) for k in set(state) - set(expected))
    mismatched = sorted(
        f"{names.get(k, k)} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    return [
        f"{len(keys)} {what}: {_few(keys)}"
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("keys with another shape (file vs model)", mismatched),
        )
        if keys
    ]


def _empty_model(backbone: str, in_chans: int) -> nn.Module:
    """The architecture without memory (meta device, no initialisation): keys, shapes and
    dtypes only, until tensors are assigned."""
    kwargs = {"weight_init": "skip"} if BACKBONE_CONFIGS[backbone].family == "vit" else {}
    with torch.device("meta"):
        return create_model(backbone, in_chans=in_chans, **kwargs)


@functools.lru_cache(maxsize=64)
def _layout(backbone: str, in_chans: int) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in _empty_model(backbone, in_chans).state_dict().items()}


def fits(backbone: str, in_chans: int, state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` (project keys) loads strictly into ``backbone`` with ``in_chans``."""
    try:
        layout = _layout(backbone, in_chans)
    except ValueError:
        return False
    return layout.keys() == state.keys() and all(
        tuple(state[k].shape) == shape for k, shape in layout.items()
    )


def guess_backbones(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The known backbones an encoder state dict (reference or project keys) loads
    strictly into, once mapped for each backbone's family."""
    found = []
    for name, config in BACKBONE_CONFIGS.items():
        if config.family == "vit":
            mapped = {_vit_target(k)[0]: v for k, v in state.items()}
            mapped = {k: v for k, v in mapped.items() if not k.startswith(_CLASSIFIER["vit"])}
        else:
            mapped = dict(state)
        if fits(name, infer_in_chans(config, mapped), mapped):
            found.append(name)
    return found


def infer_in_chans(config: BackboneConfig, state: Mapping[str, torch.Tensor]) -> int:
    """Bands the encoder takes: any for an adapter (the reference's: the 202-band view);
    without one, what its first layer's weight says."""
    first = {"vit": f"{CORE}.patch_embed.proj.weight", "timm_resnet": "conv1.weight"}
    key = first.get(config.family)
    if config.spectral_adapter or key not in state or state[key].ndim < 2:
        return VIEW_BANDS
    return int(state[key].shape[1])


def load_strict(
    backbone: str,
    in_chans: int,
    state: Mapping[str, torch.Tensor],
    where: str,
    names: Mapping[str, str] | None = None,
    said_by: str = "",
    source: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """``create_model(backbone, in_chans)`` holding ``state`` (eval mode), refusing (naming
    ``where`` and the keys) anything that does not load strictly or is not finite.

    The model is built on the meta device and the tensors assigned (cast to the model's
    dtypes), so a 1 B-parameter ViT costs one copy of its weights, not two. ``source``
    (the file's encoder keys, before mapping) is what a refusal guesses the architecture
    from.
    """
    model = _empty_model(backbone, in_chans)
    expected = model.state_dict()
    problems = state_problems(expected, state, names)
    if problems:
        guesses = [b for b in guess_backbones(source or state) if b != backbone]
        hint = f" Its keys fit {', '.join(guesses)}." if guesses else ""
        raise WeightsError(
            f"{where} does not fit {backbone} with {in_chans} bands{said_by}: "
            + "; ".join(problems)
            + f". Is it a checkpoint of another architecture?{hint}"
        )
    cast: dict[str, torch.Tensor] = {}
    bad_dtype, not_finite = [], []
    for key, value in state.items():
        want = expected[key].dtype
        if value.dtype.is_floating_point != want.is_floating_point or value.is_complex():
            bad_dtype.append(f"{names.get(key, key) if names else key} ({value.dtype})")
            continue
        value = value.detach().to(dtype=want, device="cpu")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            not_finite.append(names.get(key, key) if names else key)
        cast[key] = value
    if bad_dtype:
        raise WeightsError(f"{where}: tensors of the wrong kind: {_few(sorted(bad_dtype))}")
    if not_finite:
        raise WeightsError(
            f"{where}: {len(not_finite)} tensors hold NaN or inf: {_few(sorted(not_finite))}"
        )
    model.load_state_dict(cast, strict=True, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        # a buffer outside the state dict stayed unallocated: build it for real
        model = create_model(backbone, in_chans=in_chans)
        model.load_state_dict(cast, strict=True)
    return model.eval()


def encoder_from(
    obj: Mapping[str, Any], backbone: str, *, part: str | None = None, where: str = "weights"
) -> tuple[nn.Module, str, str, str | None, tuple[str, ...], int]:
    """The in-memory half of :func:`read_weights`: a loaded file's top-level mapping ->
    ``(model, format, method, part, dropped keys, migrated keys)``; ``where`` names the
    file in errors."""
    if backbone not in BACKBONE_CONFIGS:
        raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONE_CONFIGS)}")
    config = BACKBONE_CONFIGS[backbone]
    state, fmt, method, chosen, dropped, prefix = select_encoder(Path(where), obj, part)
    if not state:
        raise WeightsError(f"{where}: the {chosen or 'file'} encoder holds no tensors")
    expected = set(_layout(backbone, VIEW_BANDS))
    mapped = map_keys(Path(where), state, config, expected, prefix)
    in_chans = infer_in_chans(config, mapped.state)
    label = f"{where}" + (f" ({fmt}, {chosen})" if chosen else "")
    model = load_strict(backbone, in_chans, mapped.state, label, mapped.sources, source=state)
    model.model_name = backbone
    return model, fmt, method, chosen, tuple(sorted([*dropped, *mapped.dropped])), mapped.migrated


def read_weights(
    source: str | os.PathLike, backbone: str, *, part: str | None = None
) -> LoadedWeights:
    """``backbone``'s encoder with the weights of a reference file, in memory (nothing
    written): a plain backbone state dict or a Lightning checkpoint of the reference's
    MoCo / DINO / MAE module (``part``: MoCo ``query`` (default) or ``momentum``, DINO
    ``teacher`` (default) or ``student``, MAE ``encoder``)."""
    path = Path(source)
    if backbone not in BACKBONE_CONFIGS:
        raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONE_CONFIGS)}")
    obj = read_file(path)
    model, fmt, method, chosen, dropped, migrated = encoder_from(
        obj, backbone, part=part, where=str(path)
    )
    return LoadedWeights(
        model=model,
        backbone=backbone,
        in_chans=int(model.in_chans),
        source=path.resolve(),
        sha256=sha256_of(path),
        format=fmt,
        method=method,
        part=chosen,
        dropped_keys=dropped,
        migrated_keys=migrated,
    )


# --- band statistics ------------------------------------------------------------------


def read_band_stats(stats: str | os.PathLike | Mapping[str, Any], n_bands: int) -> dict[str, Any]:
    """``{mean, std, source}`` from a mapping (``mean``/``std``), a ``band_stats.json``, or a
    folder holding ``mu.npy`` + ``sigma.npy`` (the reference's layout) or ``band_stats.json``
    (a curated folder's). ``n_bands`` positive stds and finite means are required."""
    if isinstance(stats, Mapping):
        mean, std = stats.get("mean"), stats.get("std")
        source = str(stats.get("source") or "given")
    else:
        path = Path(stats)
        if path.is_dir() and (path / "mu.npy").is_file() and (path / "sigma.npy").is_file():
            mean, std = np.load(path / "mu.npy"), np.load(path / "sigma.npy")
            source = str((path / "mu.npy").resolve())
            source = f"{source[: -len('mu.npy')]}{{mu,sigma}}.npy"
        else:
            file = path / "band_stats.json" if path.is_dir() else path
            if not file.is_file():
                raise FileNotFoundError(
                    f"{path}: no band statistics (want mu.npy + sigma.npy, or band_stats.json)"
                )
            try:
                data = json.loads(file.read_text())
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"{file}: not JSON band statistics ({e})") from e
            mean, std = data.get("mean"), data.get("std")
            source = str(file.resolve())
    if mean is None or std is None:
        raise ValueError(f"band statistics {source}: want both 'mean' and 'std'")
    mean = np.asarray(mean, dtype=np.float64).ravel()
    std = np.asarray(std, dtype=np.float64).ravel()
    if mean.shape != (n_bands,) or std.shape != (n_bands,):
        raise ValueError(
            f"band statistics {source}: {mean.size} means and {std.size} stds for an encoder "
            f"of {n_bands} bands"
        )
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ValueError(f"band statistics {source}: want finite means and positive stds")
    return {"mean": mean.tolist(), "std": std.tolist(), "source": source}


# --- importing: the project's checkpoint folder ------------------------------------------


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out_dir}: exists and is not empty; choose another folder or overwrite it"
        )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_folder(
    out_dir: Path, state: dict[str, torch.Tensor], run: dict, meta: dict, overwrite: bool
) -> None:
    """Write the folder under a temporary name beside ``out_dir``, then rename it into
    place: on any failure nothing is left (folders this call created included)."""
    from safetensors.torch import save_file

    created = [p for p in (out_dir.parent, *out_dir.parent.parents) if not p.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent)
    )
    old: Path | None = None
    try:
        layout = CheckpointLayout(staging)
        save_file(state, str(layout.weights), metadata=meta)
        layout.run.write_text(json.dumps(run, indent=2) + "\n")
        for f in (layout.weights, layout.run, staging):
            _fsync(f)
        if out_dir.is_dir() and any(out_dir.iterdir()):
            if not overwrite:  # appeared meanwhile
                raise FileExistsError(f"{out_dir}: exists and is not empty")
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out_dir, old)
        os.rename(staging, out_dir)  # replaces an empty folder too
        _fsync(out_dir.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not out_dir.exists():
            os.rename(old, out_dir)
        for p in created:  # innermost first
            try:
                p.rmdir()
            except OSError:
                break
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def import_weights(
    source: str | os.PathLike,
    backbone: str,
    out_dir: str | os.PathLike,
    *,
    part: str | None = None,
    band_stats: str | os.PathLike | Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> ImportedCheckpoint:
    """Import a reference weights file (see :func:`read_weights`) as the project's checkpoint
    folder ``out_dir`` (``model.safetensors`` + ``run.json``), loadable by
    :func:`~spectralearth.models.load_pretrained` and usable by ``evaluate``/``predict``.

    ``band_stats`` (see :func:`read_band_stats`) records the statistics the encoder was
    trained with (the reference: SpectralEarth's ``mu.npy``/``sigma.npy``). Everything is
    read and checked before anything is written; the folder appears in one rename, so on
    any failure (a file that does not fit, bad statistics, a full disk) nothing is written.
    A non-empty ``out_dir`` is refused unless ``overwrite``.
    """
    from ..bands import view_wavelengths

    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    loaded = read_weights(source, backbone, part=part)
    stats = read_band_stats(band_stats, loaded.in_chans) if band_stats is not None else None
    model = loaded.model
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    n_params = int(sum(p.numel() for p in model.parameters()))
    wavelengths = [float(w) for w in view_wavelengths()] if loaded.in_chans == VIEW_BANDS else []
    from .. import __version__

    run = {
        "format_version": FORMAT_VERSION,
        "method": loaded.method,
        "backbone": backbone,
        "in_chans": loaded.in_chans,
        "bands": loaded.in_chans,
        "wavelengths": wavelengths,
        "num_features": int(getattr(model, "num_features", 0)),
        "parameters": n_params,
        "band_stats": stats,
        "source": {
            "kind": "imported",
            "file": str(loaded.source),
            "sha256": loaded.sha256,
            "format": loaded.format,
            "part": loaded.part,
            "dropped_keys": list(loaded.dropped_keys),
            "migrated_keys": loaded.migrated_keys,
        },
        "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "spectralearth": __version__},
    }
    meta = {
        "backbone": backbone,
        "in_chans": str(loaded.in_chans),
        "method": loaded.method,
        "source_sha256": loaded.sha256,
        "source_format": loaded.format,
    }
    _write_folder(out_dir, state, run, meta, overwrite)
    return ImportedCheckpoint(
        path=out_dir,
        backbone=backbone,
        method=loaded.method,
        in_chans=loaded.in_chans,
        source=loaded.source,
        sha256=loaded.sha256,
        format=loaded.format,
        part=loaded.part,
        dropped_keys=loaded.dropped_keys,
        tensors=len(state),
        parameters=n_params,
        band_stats_source=stats["source"] if stats else None,
        migrated_keys=loaded.migrated_keys,
        run=run,
    )
