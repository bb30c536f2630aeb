"""timm-style model registry: ``register_model``, ``list_models``, ``create_model``.

Every encoder it returns has ``num_features`` (int), ``in_chans`` (int),
``forward_features(x) -> [B, num_features, h, w]`` (a spatial feature map) and
``forward(x) -> [B, num_features]`` (globally pooled). ``load_pretrained`` rebuilds one
from a checkpoint folder (``run.json`` + ``model.safetensors``) or a reference weights file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import timm
from torch import nn

from ..names import BACKBONE_CONFIGS, BackboneConfig
from .resnet import SpecResNet
from .vit import ViTEncoder

WEIGHTS_FILE = "model.safetensors"
RUN_FILE = "run.json"

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn(in_chans=..., **kwargs) -> nn.Module`` under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, in_chans: int = 202, **kwargs) -> nn.Module:
    """Build a freshly initialised encoder (never downloads weights)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if kwargs.get("pretrained"):
        raise ValueError("pretrained timm weights are not supported; use load_pretrained(path)")
    kwargs.pop("pretrained", None)
    model = _MODELS[name](in_chans=in_chans, **kwargs)
    model.in_chans = in_chans
    model.model_name = name
    return model


def load_pretrained(
    path: str | os.PathLike, backbone: str | None = None, *, part: str | None = None
) -> nn.Module:
    """An encoder with trained weights, in eval mode; nothing is written.

    ``path`` is a checkpoint folder (``run.json`` + ``model.safetensors``, written by
    pretraining or ``import_weights``) or its ``model.safetensors``; or a reference weights
    file (a plain backbone state dict ``.pth``/``.pt``/``.safetensors`` or a Lightning
    ``.ckpt`` of the reference's MoCo/DINO/MAE module, see
    :func:`spectralearth.models.weights.read_weights`), whose architecture ``backbone``
    must name (``part`` picks a Lightning module's encoder). Weights are read with
    safetensors or ``torch.load(weights_only=True)``, never by running code, and load
    strictly. Checkpoints of earlier spectralearth versions (Spec-ViT keys ``vit.*``) are
    read in the current layout, with a log line.
    """
    from safetensors.torch import load_file

    from .vit import migrate_legacy_keys
    from .weights import load_strict, read_weights

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    run_file, weights_file = folder / RUN_FILE, folder / WEIGHTS_FILE
    in_folder = path.is_dir() or (path.name == WEIGHTS_FILE and run_file.is_file())
    if path.is_file() and not in_folder:
        if backbone is None:
            raise ValueError(
                f"{path}: a weights file outside a checkpoint folder (no {RUN_FILE} beside "
                "it); name its architecture: load_pretrained(path, backbone=...)"
            )
        return read_weights(path, backbone, part=part).model
    for f in (run_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"not a pretrained model folder: {f} is missing")
    run = json.loads(run_file.read_text())
    if backbone is not None and backbone != run["backbone"]:
        raise ValueError(f"{folder}: a {run['backbone']} checkpoint, not {backbone}")
    in_chans = int(run.get("in_chans", 202))
    try:
        state = load_file(str(weights_file))
    except Exception as e:
        raise ValueError(f"{weights_file}: cannot be read as safetensors ({e})") from e
    state, _ = migrate_legacy_keys(state, where=str(weights_file))
    model = load_strict(
        run["backbone"], in_chans, state, str(weights_file), said_by=f" (as {RUN_FILE} says)"
    )
    model.model_name = run["backbone"]
    return model


# --- the encoders of spectralearth.names.BACKBONE_CONFIGS (config as data) -------------


def _builder(config: BackboneConfig) -> Callable[..., nn.Module]:
    params = dict(config.params)

    def build(in_chans: int = 202, **kwargs) -> nn.Module:
        if config.family == "spec_resnet":
            return SpecResNet(params["arch"], in_chans=in_chans, **kwargs)
        if config.family == "vit":
            return ViTEncoder(
                in_chans=in_chans,
                spectral_adapter=config.spectral_adapter,
                **{**params, **kwargs},
            )
        if config.family == "timm_resnet":
            kwargs.setdefault("num_classes", 0)
            return timm.create_model(params["arch"], pretrained=False, in_chans=in_chans, **kwargs)
        raise ValueError(f"{config.name}: unknown backbone family {config.family!r}")

    build.__name__ = config.name
    build.__doc__ = config.description
    return build


for _config in BACKBONE_CONFIGS.values():
    register_model(_builder(_config))
