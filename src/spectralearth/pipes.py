"""The external end of Dagster Pipes: a stage run in a process Dagster launched (the
``pretrained_checkpoint`` asset's ``torchrun -m spectralearth.cli pretrain``) reports its
result and log lines back to the asset, so the Dagster UI shows them.

Only global rank 0 opens the connection: every torchrun process inherits the Pipes
environment, and one report per asset is what Dagster accepts. Outside Pipes (a user's
shell, DVC, the asset's in-process path) nothing is opened and nothing is imported.

    with dagster_pipes() as pipes:       # None unless Pipes launched us and we are rank 0
        if pipes is not None:
            pipes.log("pretraining started on 8 processes")   # a line in the run's event log
        result = stage(...)
        if pipes is not None:
            pipes.report(result)              # the asset's materialization

``dagster-pipes`` is the protocol's small, dependency-free client (installed with dagster);
it is imported only in a Pipes process, so the library keeps no Dagster import of its own.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spectralearth.ssl.distributed import is_global_zero
from spectralearth.stages.result import Figure, Markdown, StageResult

# set by the orchestrating Dagster process (dagster_pipes.DAGSTER_PIPES_CONTEXT_ENV_VAR)
PIPES_CONTEXT_ENV = "DAGSTER_PIPES_CONTEXT"
# the reported metadata key that carries the stage's one-line summary
SUMMARY_KEY = "summary"
# how long a failed rank other than 0 waits before exiting under Pipes (see dagster_pipes)
FAILED_RANK_GRACE_S = 15.0


def launched_by_pipes() -> bool:
    """True in a process Dagster Pipes launched (on every rank of a torchrun under it)."""
    return bool(os.environ.get(PIPES_CONTEXT_ENV))


def _png_markdown(path: Path, alt: str) -> str:
    if not Path(path).is_file():
        return f"({alt}: {path} not written)"
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{alt}](data:image/png;base64,{data})"


def pipes_metadata(metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A stage's plain metadata (``StageResult.metadata()``) as Pipes metadata values, typed
    as the asset's in-process path shows them: paths as paths, figures embedded in markdown,
    lists and dicts as JSON; None dropped."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if isinstance(value, Figure):
            typed = ("md", _png_markdown(value.path, value.alt))
        elif isinstance(value, Markdown):
            typed = ("md", str(value))
        elif isinstance(value, Path):
            typed = ("path", str(value))
        elif isinstance(value, bool):
            typed = ("bool", value)
        elif isinstance(value, int):
            typed = ("int", value)
        elif isinstance(value, float):  # JSON has no NaN or infinity: say them in words
            typed = ("float", value) if math.isfinite(value) else ("text", str(value))
        elif isinstance(value, list | tuple | dict):
            typed = ("json", list(value) if isinstance(value, tuple) else value)
        else:
            typed = ("text", str(value))
        out[key] = {"type": typed[0], "raw_value": typed[1]}
    return out


class PipesReport:
    """Rank 0's open Pipes connection: log lines and the stage's materialization."""

    def __init__(self, context: Any) -> None:
        self._context = context

    @property
    def run_id(self) -> str:
        """The Dagster run that launched this process (an MLflow lineage tag)."""
        return str(self._context.run_id)

    def log(self, message: str) -> None:
        """A line in the Dagster run's event log."""
        self._context.log.info(message)

    def report(self, result: StageResult) -> None:
        """The asset's materialization: ``result``'s metadata and its summary line."""
        metadata = pipes_metadata({**result.metadata(), SUMMARY_KEY: result.summary()})
        self._context.report_asset_materialization(metadata=metadata)


@contextlib.contextmanager
def dagster_pipes() -> Iterator[PipesReport | None]:
    """The Pipes connection on global rank 0 of a process Dagster Pipes launched, else None.
    An exception inside is reported to Dagster (and raised on)."""
    if not launched_by_pipes():
        yield None
        return
    if not is_global_zero():
        try:
            yield None
        except Exception:
            # torchrun stops every rank once one fails: a refused input fails every rank at
            # once, and rank 0 (the one reporting to Dagster) must say why before it is killed
            time.sleep(FAILED_RANK_GRACE_S)
            raise
        return
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as context:
        yield PipesReport(context)
