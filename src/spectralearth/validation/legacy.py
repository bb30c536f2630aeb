"""The old call forms, ``f(settings, ...)`` with paths taken from params.yaml's data folder,
kept only for the callers not yet moved to explicit folders (``pipeline.validate``,
``dagster_project/checks.py``). Delete this module and its use in ``__init__`` once they
call :mod:`.gates` with explicit folders.

Each wrapper dispatches on its first argument: a :class:`Settings` is the old form (reports
under ``<data_dir>/validation``, or under the folder of ``report_path``: ``--report`` now
names a folder, or a ``.json`` file whose folder receives every report); anything else is
the new one.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

from spectralearth.config import Settings
from spectralearth.validation import gates


def _reference(settings: Settings, reference):
    """Today's fallback of the pipeline: its own band statistics under ``<data_dir>/stats``."""
    if reference is None and settings.validate.reference_stats is None:
        if settings.paths.stats.is_file():
            return settings.paths.stats
    return reference


def _report_dir(settings: Settings, report_path) -> Path:
    if report_path is None:
        return settings.paths.validation
    report_path = Path(report_path)
    return report_path.parent if report_path.suffix == ".json" else report_path


def _dispatch(new):
    def decorate(old):
        @functools.wraps(new)
        def call(*args, **kwargs):
            if args and isinstance(args[0], Settings):
                return old(*args, **kwargs)
            return new(*args, **kwargs)

        return call

    return decorate


@_dispatch(gates.validate_scene)
def validate_scene(settings: Settings, scene: str, patches_root=None, *, docs=None):
    return gates.validate_scene(
        Path(patches_root or settings.paths.patches),
        scene,
        settings.paths.validation,
        settings,
        data_docs=docs,
    )


@_dispatch(gates.validate_index)
def validate_index(settings: Settings, patches_root=None, report_path=None, *, docs=None):
    report_dir = _report_dir(settings, report_path)
    report = gates.validate_index(
        Path(patches_root or settings.paths.patches), report_dir, settings, data_docs=docs
    )
    _copy_index_report(report_dir, report_path)
    return report


@_dispatch(gates.validate_warnings)
def validate_warnings(
    settings: Settings, index=None, patches_root=None, reference=None, *, docs=None
):
    return gates.validate_warnings(
        Path(patches_root or settings.paths.patches),
        settings.paths.validation,
        settings,
        index=index,
        reference=_reference(settings, reference),
        data_docs=docs,
    )


@_dispatch(gates.quality_gates)
def quality_gates(settings: Settings, patches_root=None, report_path=None, *, docs=None):
    report_dir = _report_dir(settings, report_path)
    result = gates.quality_gates(
        Path(patches_root or settings.paths.patches),
        report_dir,
        settings,
        reference=_reference(settings, None),
        data_docs=docs,
    )
    _copy_index_report(report_dir, report_path)
    return result


def _copy_index_report(report_dir: Path, report_path) -> None:
    """``--report OTHER.json``: the index report under that name too (as before)."""
    if report_path is not None and Path(report_path).suffix == ".json":
        if Path(report_path).name != "patch_index.json":
            shutil.copyfile(report_dir / "patch_index.json", report_path)
