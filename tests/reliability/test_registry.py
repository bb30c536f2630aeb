"""Registered versions as a shared store may hold them: a checkpoint tag that would lead out of
the download folder, and a version whose files are not an encoder. Neither writes outside the
cache; the second fails naming the spec and leaves nothing behind."""

from __future__ import annotations

import pytest

from spectralearth import tracking
from spectralearth.config import load_settings
from tests.helpers import write_params


def _register(settings, tmp_path, files: dict[str, bytes], tags: dict) -> None:
    """A version of the umbrella model made by hand (no training): the files as run
    artifacts, registered from the run's artifact folder, alias latest-pretrained."""
    import mlflow

    run_id = tracking.start_run(settings.tracking, "hand-made")
    client = mlflow.MlflowClient()
    src = tmp_path / "files"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
        client.log_artifact(run_id, str(src / name), artifact_path="checkpoint")
    name = settings.tracking.registered_model
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException:
        pass
    uri = f"{client.get_run(run_id).info.artifact_uri}/checkpoint"
    version = client.create_model_version(name, uri, run_id=run_id, tags=tags)
    client.set_registered_model_alias(name, tracking.LATEST_ALIAS, version.version)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SPECTRALEARTH_DATA_DIR", raising=False)
    return load_settings(write_params(tmp_path / "p"))


def test_a_checkpoint_tag_leading_out_of_the_cache_is_not_followed(settings, tmp_path):
    files = {"model.safetensors": b"weights", "run.json": b"{}"}
    tags = {"checkpoint": "../../escaped", "method": "moco", "backbone": "spec_resnet18"}
    _register(settings, tmp_path, files, tags)
    cache = tmp_path / "cache"
    got = tracking.registered_checkpoint(
        settings.tracking, f"models:/{settings.tracking.registered_model}", cache
    )
    assert got.path.parent.parent == cache and got.path.name == "moco-spec_resnet18"
    assert (got.path / "model.safetensors").read_bytes() == b"weights"
    assert not (tmp_path / "escaped").exists() and not (cache.parent / "escaped").exists()
    assert got.model_id is None  # registered from a run folder, before LoggedModels


def test_a_version_that_is_not_an_encoder_fails_and_leaves_nothing(settings, tmp_path):
    _register(settings, tmp_path, {"notes.txt": b"hello"}, {"method": "moco"})
    cache = tmp_path / "cache"
    spec = f"{settings.tracking.registered_model}@{tracking.LATEST_ALIAS}"
    with pytest.raises(tracking.RegisteredModelError, match=spec) as err:
        tracking.registered_checkpoint(settings.tracking, spec, cache)
    assert "model.safetensors" in str(err.value)
    assert [p for p in cache.rglob("*") if p.is_file()] == []
