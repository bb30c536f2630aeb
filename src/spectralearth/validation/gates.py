"""The gates: each suite on its table, with explicit folders.

Every function reads only the curated folder it is given and writes only under the report
folder it is given (reports, GX project, Data Docs); settings carry thresholds, never paths::

    <report>/patches/<scene>.json   validate_scene      (blocking, one scene's patch files)
    <report>/patches.json           validate_all_patches (blocking, every patch file)
    <report>/patch_index.json       validate_index      (blocking, the index)
    <report>/warnings.json          validate_warnings   (band drift, multitemporal share)
    <report>/data_docs/index.html   Data Docs, rebuilt once by quality_gates / index_gates /
                                    validate_index / validate_warnings (not per scene)

``data_docs`` None means params.yaml's ``validate.data_docs``; False runs ephemerally (no GX
project, no docs; the JSON reports are still written).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pandas as pd

from spectralearth.config import CurateSettings, Settings
from spectralearth.io import atomic_path
from spectralearth.validation.docs import build_data_docs, forget_results
from spectralearth.validation.reference import Reference, resolve_reference
from spectralearth.validation.report import QualityGates, ValidationReport
from spectralearth.validation.runner import validate_frame
from spectralearth.validation.settings import GateSettings
from spectralearth.validation.suites import load_suite_dict
from spectralearth.validation.tables import (
    band_drift_table,
    dataset_band_means,
    index_table,
    location_table,
    patch_table,
)

AnySettings = GateSettings | Settings | CurateSettings


def _fix_context(curated_dir: Path | None, report_dir: Path | None, scene: str | None) -> dict:
    context = {"scene": scene or "SCENE"}
    if curated_dir is not None:
        context["curated"] = str(curated_dir)
    if report_dir is not None:
        context["report"] = str(report_dir)
    return context


def _recording(report_dir: Path | None, settings: GateSettings, data_docs: bool | None):
    """The folder to record GX results in, or None (ephemeral)."""
    wanted = settings.validate.data_docs if data_docs is None else data_docs
    return Path(report_dir) if (wanted and report_dir is not None) else None


# --- one suite on one table ---------------------------------------------------------------


def validate_patches(
    table: pd.DataFrame,
    settings: AnySettings,
    report_path: Path | None = None,
    *,
    report_dir: Path | None = None,
    run_name: str | None = None,
    fix_context: dict | None = None,
) -> ValidationReport:
    """The ``patches`` suite on a :func:`patch_table` (``report_dir``: record it there)."""
    gate = GateSettings.of(settings)
    report = validate_frame(
        table,
        load_suite_dict("patches"),
        gate.parameters(),
        report_dir=report_dir,
        run_name=run_name or "all_patches",
        index_column="path",
        fix_context=fix_context,
    )
    if report_path is not None:
        report.write(report_path)
    return report


def validate_patch_index(
    index: pd.DataFrame,
    settings: AnySettings,
    report_path: Path | None = None,
    *,
    report_dir: Path | None = None,
    run_name: str | None = None,
    fix_context: dict | None = None,
) -> ValidationReport:
    """The ``patch_index`` suite on an index (as :func:`index_table` derives it)."""
    gate = GateSettings.of(settings)
    report = validate_frame(
        index_table(index),
        load_suite_dict("patch_index"),
        gate.parameters(),
        report_dir=report_dir,
        run_name=run_name or "patch_index",
        index_column="patch_id",
        fix_context=fix_context,
    )
    if report_path is not None:
        report.write(report_path)
    return report


def _skipped(suite: str, reason: str) -> ValidationReport:
    return ValidationReport(suite, True, (), blocking=False, observed={"skipped": reason})


def validate_band_drift(
    index: pd.DataFrame,
    reference: Reference | str | None,
    settings: AnySettings,
    *,
    report_dir: Path | None = None,
    fix_context: dict | None = None,
) -> ValidationReport:
    """Warning: every band's dataset mean within ``validate.max_band_drift_sigma`` reference
    stds. ``reference`` None or a string (why there is none): the gate is skipped."""
    gate = GateSettings.of(settings)
    if isinstance(reference, str):
        return _skipped("band_drift", reference)
    if reference is None:
        return _skipped("band_drift", "no reference statistics")
    if len(index) == 0 or "band_means" not in index.columns:
        return _skipped("band_drift", "no patches")
    try:
        table = band_drift_table(dataset_band_means(index), reference)
    except ValueError as exc:  # band count mismatch: the blocking gates name it
        return _skipped("band_drift", str(exc))
    context = {"reference": reference.source, **(fix_context or {})}
    report = validate_frame(
        table,
        load_suite_dict("band_drift"),
        gate.parameters(),
        report_dir=report_dir,
        index_column="band",
        blocking=False,
        fix_context=context,
    )
    tolerance = gate.validate.max_band_drift_sigma
    worst = int(table["drift_sigma"].abs().idxmax())
    observed = {
        "reference": reference.source,
        "max_abs_drift_sigma": round(float(table["drift_sigma"].abs().max()), 4),
        "worst_band": int(table["band"][worst]),
        "bands_beyond_tolerance": int((table["drift_sigma"].abs() > tolerance).sum()),
        "tolerance_sigma": tolerance,
    }
    return dataclasses.replace(report, observed=observed)


def validate_multitemporal(
    index: pd.DataFrame,
    settings: AnySettings,
    *,
    report_dir: Path | None = None,
    fix_context: dict | None = None,
) -> ValidationReport:
    """Warning: the share of multitemporal locations is at least
    ``validate.min_multitemporal_share``."""
    gate = GateSettings.of(settings)
    table = location_table(index)
    report = validate_frame(
        table,
        load_suite_dict("multitemporal"),
        gate.parameters(),
        report_dir=report_dir,
        index_column="location_id",
        blocking=False,
        fix_context=fix_context,
    )
    share = round(float(table["multitemporal"].mean()), 4) if len(table) else 0.0
    observed = {
        "locations": len(table),
        "multitemporal_share": share,
        "min_share": gate.validate.min_multitemporal_share,
    }
    return dataclasses.replace(report, observed=observed)


# --- gates on a curated folder ------------------------------------------------------------


def _read_index(curated_dir: Path) -> pd.DataFrame:
    from spectralearth.layout import CuratedLayout
    from spectralearth.patches.store import read_index

    path = CuratedLayout(curated_dir).index
    if not path.is_file():
        raise FileNotFoundError(
            f"no patch index in {curated_dir}: {path} is missing (curate first: "
            f"`spectralearth curate --out {curated_dir}`)"
        )
    return read_index(curated_dir)


def _plain_name(scene: str) -> str:
    if not scene or "/" in scene or scene in (".", ".."):
        raise ValueError(f"scene {scene!r} is not a plain name")
    return scene


def validate_scene(
    curated_dir: Path,
    scene: str,
    report_dir: Path,
    settings: AnySettings,
    *,
    data_docs: bool | None = None,
) -> ValidationReport:
    """Blocking gate on one scene's patch files (a ``curated_patches`` partition).

    Reads the scene's index fragment ``<curated>/scenes/<scene>.parquet`` for its patch
    paths; report ``<report>/patches/<scene>.json``; the result is recorded for the Data Docs
    (rebuilt by the next index gate, not here). A scene whose patches were all filtered out
    has an empty table, which passes.
    """
    from spectralearth.patches.store import fragment_paths, read_fragment

    gate, curated_dir, report_dir = GateSettings.of(settings), Path(curated_dir), Path(report_dir)
    fragment, _ = fragment_paths(curated_dir, _plain_name(scene))
    if not fragment.is_file():
        raise FileNotFoundError(
            f"no index fragment for scene {scene}: {fragment} (curate it first: "
            f"`spectralearth curate --out {curated_dir}`, or materialize curated_patches {scene})"
        )
    return validate_patches(
        patch_table(curated_dir, read_fragment(curated_dir, scene)),
        gate,
        report_dir / "patches" / f"{scene}.json",
        report_dir=_recording(report_dir, gate, data_docs),
        run_name=scene,
        fix_context=_fix_context(curated_dir, report_dir, scene),
    )


def validate_all_patches(
    curated_dir: Path,
    report_dir: Path,
    settings: AnySettings,
    *,
    data_docs: bool | None = None,
) -> ValidationReport:
    """The ``patches`` suite on every patch of the index; report ``<report>/patches.json``
    (recorded, docs not rebuilt: :func:`quality_gates` does that)."""
    gate, curated_dir, report_dir = GateSettings.of(settings), Path(curated_dir), Path(report_dir)
    return validate_patches(
        patch_table(curated_dir, _read_index(curated_dir)),
        gate,
        report_dir / "patches.json",
        report_dir=_recording(report_dir, gate, data_docs),
        run_name="all_patches",
        fix_context=_fix_context(curated_dir, report_dir, None),
    )


def validate_index(
    curated_dir: Path,
    report_dir: Path,
    settings: AnySettings,
    *,
    data_docs: bool | None = None,
    build_docs: bool = True,
) -> ValidationReport:
    """Blocking gate on the whole index; report ``<report>/patch_index.json``; rebuilds the
    Data Docs (with every scene recorded so far) unless ``build_docs`` is False."""
    from spectralearth.layout import CuratedLayout

    gate, curated_dir, report_dir = GateSettings.of(settings), Path(curated_dir), Path(report_dir)
    recording = _recording(report_dir, gate, data_docs)
    report = validate_patch_index(
        _read_index(curated_dir),
        gate,
        report_dir=recording,
        fix_context=_fix_context(curated_dir, report_dir, None),
    )
    if recording is not None:  # scenes no longer curated here leave the Data Docs
        scenes = {p.stem for p in CuratedLayout(curated_dir).scenes.glob("*.parquet")}
        forget_results(report_dir, "patches", scenes | {"all_patches"})
    if recording is not None and build_docs:
        build_data_docs(report_dir)
    report.write(report_dir / "patch_index.json")
    return report


def validate_warnings(
    curated_dir: Path,
    report_dir: Path,
    settings: AnySettings,
    *,
    index: pd.DataFrame | None = None,
    reference: Reference | str | os.PathLike | None = None,
    data_docs: bool | None = None,
    build_docs: bool = True,
) -> list[ValidationReport]:
    """Non-blocking gates on the index: band drift against the reference (see
    :mod:`.reference`), multitemporal share. Report ``<report>/warnings.json``."""
    gate, curated_dir, report_dir = GateSettings.of(settings), Path(curated_dir), Path(report_dir)
    if index is None:
        index = _read_index(curated_dir)
    recording = _recording(report_dir, gate, data_docs)
    context = _fix_context(curated_dir, report_dir, None)
    try:
        ref: Reference | str | None = resolve_reference(gate, curated_dir, reference)
    except (OSError, ValueError) as exc:  # a configured reference that is absent or malformed
        ref = f"reference statistics unusable: {exc}"
    reports = [
        validate_band_drift(index, ref, gate, report_dir=recording, fix_context=context),
        validate_multitemporal(index, gate, report_dir=recording, fix_context=context),
    ]
    if recording is not None and build_docs:
        build_data_docs(report_dir)
    with atomic_path(report_dir / "warnings.json") as tmp:
        tmp.write_text(json.dumps([r.as_dict() for r in reports], indent=1, default=str))
    return reports


def index_gates(
    curated_dir: Path,
    report_dir: Path,
    settings: AnySettings,
    *,
    reference: Reference | str | os.PathLike | None = None,
    data_docs: bool | None = None,
) -> QualityGates:
    """The index's gates (blocking ``patch_index``, the two warnings), Data Docs built once:
    what a Dagster multi-asset check on ``patch_index`` calls."""
    return _gates(curated_dir, report_dir, settings, reference, data_docs, all_patches=False)


def quality_gates(
    curated_dir: Path,
    report_dir: Path,
    settings: AnySettings,
    *,
    reference: Reference | str | os.PathLike | None = None,
    data_docs: bool | None = None,
) -> QualityGates:
    """Every gate on a curated folder (the index, every patch file, the warnings), its
    reports and Data Docs (built once) under ``report_dir``: ``spectralearth validate``.

    ``.passed`` is False when a blocking gate failed (the command exits 1).
    """
    return _gates(curated_dir, report_dir, settings, reference, data_docs, all_patches=True)


def _gates(curated_dir, report_dir, settings, reference, data_docs, *, all_patches: bool):
    gate, curated_dir, report_dir = GateSettings.of(settings), Path(curated_dir), Path(report_dir)
    index_report = validate_index(
        curated_dir, report_dir, gate, data_docs=data_docs, build_docs=False
    )
    patches = (
        validate_all_patches(curated_dir, report_dir, gate, data_docs=data_docs)
        if all_patches
        else None
    )
    drift, multi = validate_warnings(
        curated_dir,
        report_dir,
        gate,
        index=_read_index(curated_dir),
        reference=reference,
        data_docs=data_docs,
        build_docs=False,
    )
    docs = build_data_docs(report_dir) if _recording(report_dir, gate, data_docs) else None
    return QualityGates(
        patch_index=index_report,
        patches=patches,
        band_drift=drift,
        multitemporal=multi,
        report_dir=report_dir,
        docs=docs,
    )
