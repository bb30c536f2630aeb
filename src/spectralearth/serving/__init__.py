"""Serving: a pretrained encoder as an MLflow pyfunc model (MLflow 3 "models from code").

:mod:`.encoder` holds the wrapper class; :mod:`.encoder_model` is the script MLflow stores
in the logged model and runs to rebuild it. No pickle: the weights travel as safetensors
with their ``run.json``.
"""
