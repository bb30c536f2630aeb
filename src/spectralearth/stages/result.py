"""The shape every stage result shares: a frozen dataclass with ``metadata()`` (what the
Dagster asset shows) and ``summary()`` (the line the CLI prints).

Metadata values are plain data so the library needs no Dagster import: numbers, strings,
booleans, :class:`pathlib.Path` (shown as a path), :class:`Markdown` (rendered; PNG figures
are embedded by the Dagster wiring from :class:`Figure`), lists and dicts (shown as JSON).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Markdown(str):
    """Metadata text rendered as markdown in the UI."""


@dataclass(frozen=True)
class Figure:
    """A PNG the UI embeds (``alt`` says what it shows)."""

    path: Path
    alt: str


MetadataValue = int | float | str | bool | Path | Markdown | Figure | list | dict | None


class StageResult:
    """Base of the frozen dataclasses the stages return."""

    def metadata(self) -> dict[str, MetadataValue]:  # pragma: no cover - every stage overrides
        raise NotImplementedError

    def summary(self) -> str:  # pragma: no cover - every stage overrides
        raise NotImplementedError


def usage_metadata(usage: Any) -> dict[str, MetadataValue]:
    """Wall time and the stage's own peak memory (``profiling.Usage``), when measured."""
    return usage.metadata() if usage is not None else {}
