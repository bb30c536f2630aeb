"""Encoders: the spectral adapter, Spec-ResNet, Spec-ViT and plain timm baselines."""

from .adapter import MIN_BANDS, SpectralAdapter
from .registry import create_model, list_models, load_pretrained, register_model

__all__ = [
    "MIN_BANDS",
    "SpectralAdapter",
    "create_model",
    "list_models",
    "load_pretrained",
    "register_model",
]
