"""A pretrained encoder (``model.safetensors`` + ``run.json``) as an MLflow pyfunc model.

Input: one float32 tensor ``[N, C, H, W]`` of L2A reflectance as the patches store it
(scaled integers, ``C`` bands in the checkpoint's wavelength order, ``run.json``
``wavelengths``); the model normalises it with the checkpoint's own band statistics.
Output: ``[N, D]`` float32 embeddings (the encoder's pooled features).

The logged model is "from code" (:mod:`spectralearth.serving.encoder_model`): loading it runs
that script, which needs ``spectralearth`` importable (it builds the architecture); the
weights are read with safetensors only.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np

WEIGHTS_ARTIFACT = "weights"
RUN_ARTIFACT = "run"
EXAMPLE_SIZE = 8  # px: a small input example keeps the logged JSON small (~0.5 MB)
BATCH = 64  # patches per forward pass in predict


class EncoderModel(mlflow.pyfunc.PythonModel):
    """``predict(context, x[N, C, H, W]) -> embeddings[N, D]`` of a spectralearth encoder."""

    def load_context(self, context) -> None:
        import torch

        from spectralearth.data.shards import BandNormalize
        from spectralearth.models import load_pretrained

        weights = Path(context.artifacts[WEIGHTS_ARTIFACT])
        run = json.loads(Path(context.artifacts[RUN_ARTIFACT]).read_text())
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder = load_pretrained(weights).to(self.device).eval()
        self.normalize = BandNormalize(run["band_stats"]).to(self.device)
        self.in_chans = int(run.get("in_chans", 202))

    def predict(self, context, model_input, params=None) -> np.ndarray:
        import torch

        if isinstance(model_input, dict):  # a named tensor, e.g. from a REST client
            (model_input,) = model_input.values()
        x = np.asarray(model_input, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected float32 [N, {self.in_chans}, H, W] reflectance, got shape {x.shape}"
            )
        out = []
        with torch.no_grad():
            for start in range(0, len(x), BATCH):
                batch = torch.from_numpy(x[start : start + BATCH]).to(self.device)
                out.append(self.encoder(self.normalize(batch)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def signature(in_chans: int, num_features: int):
    """Any batch size and patch size; the checkpoint's band count; ``[N, D]`` out."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, in_chans, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_features))]),
    )


def input_example(run: dict) -> np.ndarray:
    """One ``EXAMPLE_SIZE`` px patch at the checkpoint's mean reflectance (a typical input)."""
    mean = np.asarray(run["band_stats"]["mean"], dtype=np.float32)
    shape = (1, len(mean), EXAMPLE_SIZE, EXAMPLE_SIZE)
    return np.ascontiguousarray(np.broadcast_to(mean[None, :, None, None], shape))


def model_script() -> Path:
    """The "model from code" script MLflow stores with the logged model."""
    return Path(__file__).with_name("encoder_model.py")
