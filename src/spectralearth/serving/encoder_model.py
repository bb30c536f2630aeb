"""The script of the logged encoder model (MLflow "models from code"): MLflow runs it when
the model is loaded; the artifacts (safetensors + run.json) hold the encoder."""

from mlflow.models import set_model

from spectralearth.serving.encoder import EncoderModel

set_model(EncoderModel())
