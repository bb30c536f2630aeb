"""Encoders: the spectral adapter, Spec-ResNet, Spec-ViT and plain timm baselines; loading
checkpoints (this project's folders and the SpectralEarth reference's weights files)."""

from .adapter import MIN_BANDS, SpectralAdapter
from .registry import create_model, list_models, load_pretrained, register_model
from .weights import ImportedCheckpoint, WeightsError, import_weights, read_weights

__all__ = [
    "MIN_BANDS",
    "ImportedCheckpoint",
    "SpectralAdapter",
    "WeightsError",
    "create_model",
    "import_weights",
    "list_models",
    "load_pretrained",
    "read_weights",
    "register_model",
]
