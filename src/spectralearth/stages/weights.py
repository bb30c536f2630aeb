"""Import weights: a released SpectralEarth backbone (or a reference Lightning checkpoint)
becomes a checkpoint folder like pretraining's, registered in MLflow with its source.

The folder is written to a staging place, registered, and only then moved to ``out``: a
failed registration leaves nothing (or the previous checkpoint) at ``out``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from spectralearth.config import TrackingSettings
from spectralearth.layout import CheckpointLayout
from spectralearth.stages.result import StageResult

IMPORTED_ALIAS = "latest-imported"


@dataclass(frozen=True)
class ImportedWeights(StageResult):
    imported: object  # spectralearth.models.weights.ImportedCheckpoint (at ``checkpoint``)
    checkpoint: Path
    mlflow_run_id: str
    model_versions: tuple[tuple[str, int], ...] = field(default=())

    def metadata(self) -> dict:
        meta = {**self.imported.metadata(), "checkpoint": self.checkpoint}
        meta.update(mlflow_run_id=self.mlflow_run_id)
        meta.update({f"registered/{n}": v for n, v in self.model_versions})
        return meta

    def summary(self) -> str:
        text = self.imported.summary().replace(str(self.imported.path), str(self.checkpoint))
        registered = ", ".join(f"{n} v{v}" for n, v in self.model_versions)
        return f"{text}\n  registered {registered} (alias {IMPORTED_ALIAS})"


def import_weights(
    source: Path,
    backbone: str,
    out: Path,
    tracking: TrackingSettings,
    *,
    part: str | None = None,
    band_stats=None,
    overwrite: bool = False,
) -> ImportedWeights:
    """Read ``source`` (see :func:`spectralearth.models.weights.import_weights`), write the
    checkpoint folder ``out`` and register it (``spectralearth-<backbone>-<method>`` and the
    umbrella model, alias ``latest-imported``, tagged with the file's sha256 and format)."""
    from spectralearth import tracking as mlf
    from spectralearth.models.weights import import_weights as read_and_write

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty: give another --out or --force")
    mlf.check_store(tracking)
    staging = out.parent / f".{out.name}.import-staging"
    shutil.rmtree(staging, ignore_errors=True)
    run_id = model_id = None
    try:
        imported = read_and_write(
            source, backbone, staging, part=part, band_stats=band_stats, overwrite=True
        )
        layout = CheckpointLayout(staging)
        lineage = {
            "source_file": str(Path(source).resolve()),
            "source_sha256": imported.sha256,
            "source_format": imported.format,
            "source_part": imported.part or "",
        }
        run_id = mlf.start_run(
            tracking,
            run_name=f"import-{imported.method}-{backbone}",
            tags={"stage": "import", **lineage},
        )
        model_id = mlf.new_encoder_model(tracking, run_id, lineage)
        _record(layout, mlflow_run_id=run_id, mlflow_model_id=model_id)
        mlf.log_pretraining(
            tracking,
            run_id,
            params={"backbone": backbone, "part": imported.part or "", "format": imported.format},
            metrics={"parameters": imported.parameters},
            artifacts=[],
        )
        registration = mlf.register_checkpoint(
            tracking,
            run_id,
            model_id,
            staging,
            imported.method,
            backbone,
            lineage,
            checkpoint_name=out.name,
            alias=IMPORTED_ALIAS,
        )
        versions = registration.versions
        _record(layout, model_versions=versions, mlflow_model_uri=registration.model_uri)
        if out.exists():  # --force: the old folder goes only once the new one is registered
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, out)
    except BaseException:
        if run_id is not None:
            mlf.fail_run(tracking, run_id, model_id)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ImportedWeights(imported, out, run_id, tuple(sorted(versions.items())))


def _record(layout: CheckpointLayout, **fields) -> None:
    """Add ``fields`` to the checkpoint's run.json (written atomically)."""
    import json

    from spectralearth.io import atomic_write_text

    record = json.loads(layout.run.read_text())
    record.update(fields)
    atomic_write_text(layout.run, json.dumps(record, indent=2) + "\n")
