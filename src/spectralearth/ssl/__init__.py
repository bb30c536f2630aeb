"""Self-supervised pretraining: method registry (MoCo-v2, DINO, MAE) and the ``pretrain`` stage."""

from .registry import METHODS, get_method, list_methods
from .train import pretrain

__all__ = ["METHODS", "get_method", "list_methods", "pretrain"]
