"""timm-style model registry: ``register_model``, ``list_models``, ``create_model``.

Every encoder it returns has ``num_features`` (int), ``in_chans`` (int),
``forward_features(x) -> [B, num_features, h, w]`` (a spatial feature map) and
``forward(x) -> [B, num_features]`` (globally pooled). ``load_pretrained`` rebuilds one
from a pretraining output folder (``run.json`` + ``model.safetensors``).
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


def load_pretrained(path: str | os.PathLike) -> nn.Module:
    """Rebuild the encoder saved by pretraining (a folder with run.json + model.safetensors).

    ``path`` may also be the ``model.safetensors`` file itself. Weights are read with
    safetensors only (no pickle). The model is returned in eval mode.
    """
    from safetensors.torch import load_file

    path = Path(path)
    folder = path.parent if path.is_file() else path
    run_file, weights_file = folder / RUN_FILE, folder / WEIGHTS_FILE
    for f in (run_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"not a pretrained model folder: {f} is missing")
    run = json.loads(run_file.read_text())
    model = create_model(run["backbone"], in_chans=int(run.get("in_chans", 202)))
    state = load_file(str(weights_file))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:

        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        problems = [
            f"{len(keys)} {what}: {few(keys)}"
            for what, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("keys with another shape", mismatched),
            )
            if keys
        ]
        raise ValueError(
            f"{weights_file} does not fit {run['backbone']} with {run.get('in_chans', 202)} "
            f"bands (as run.json says): " + "; ".join(problems) + ". Is it a checkpoint of "
            "another architecture, or a run.json from another run?"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


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
