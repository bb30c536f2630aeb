"""The suites in ``expectations/*.json``: loading them and reading what they ask of a run.

A suite file is the whole contract of its gate. Thresholds that params.yaml holds are GX
suite parameters (``{"$PARAMETER": "curate_max_cloud_frac"}``, or an expression of them such
as ``"1 - curate_max_nodata_frac"``) filled at validation time from
:meth:`GateSettings.parameters`; nothing is appended in code. Each expectation may carry
``meta.fix`` (else the suite's ``meta.fix``): what to run when it fails, with ``{curated}``,
``{report}``, ``{scene}`` and any parameter name as placeholders.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Iterator, Mapping
from pathlib import Path

from spectralearth.config import project_root

EXPECTATIONS_ENV = "SPECTRALEARTH_EXPECTATIONS"

# what GX's suite-parameter expressions may name besides parameters (functions, constants)
_EXPRESSION_WORDS = {"E", "PI", "sin", "cos", "tan", "exp", "abs", "trunc", "round", "sgn"}
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_$]*")


def expectations_dir() -> Path:
    """``$SPECTRALEARTH_EXPECTATIONS`` (suites that override the repository's), else
    the repository's ``expectations/``."""
    env = os.environ.get(EXPECTATIONS_ENV)
    return Path(env) if env else project_root() / "expectations"


def suite_path(name: str, directory: Path | None = None) -> Path:
    """Where suite ``name`` is read from: ``directory``, else the override folder (falling
    back to the repository's ``expectations/`` for suites it does not hold)."""
    candidates = [Path(directory)] if directory else [expectations_dir()]
    if directory is None and os.environ.get(EXPECTATIONS_ENV):
        candidates.append(project_root() / "expectations")
    for folder in candidates:
        path = folder / f"{name}.json"
        if path.is_file():
            return path
    raise FileNotFoundError(f"expectation suite not found: {candidates[0] / f'{name}.json'}")


def load_suite_dict(name: str, directory: Path | None = None) -> dict:
    """The suite ``<name>.json`` as a GX JSON dict (see :func:`suite_path`)."""
    path = suite_path(name, directory)
    try:
        suite = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a JSON suite: {exc}") from exc
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise ValueError(f"{path}: a suite needs a name and a list of expectations")
    suite.setdefault("meta", {})["source"] = str(path)
    return suite


def expectation_label(expectation: Mapping) -> str:
    """``type(column)``: how reports name an expectation."""
    kwargs = expectation.get("kwargs") or {}
    column = kwargs.get("column") or ",".join(kwargs.get("column_list") or [])
    return f"{expectation['type']}({column})"


def _parameter_kwargs(expectation: Mapping) -> Iterator[tuple[str, str]]:
    for key, value in (expectation.get("kwargs") or {}).items():
        if isinstance(value, dict) and "$PARAMETER" in value:
            yield key, str(value["$PARAMETER"])


def parameter_expressions(expectation: Mapping) -> dict[str, str]:
    """``{kwarg: expression}`` for the kwargs of ``expectation`` that are suite parameters."""
    return dict(_parameter_kwargs(expectation))


def parameter_names(suite: Mapping) -> set[str]:
    """Every parameter name the suite's expressions use."""
    names: set[str] = set()
    for expectation in suite["expectations"]:
        for _, expression in _parameter_kwargs(expectation):
            names |= set(_IDENTIFIER.findall(expression)) - _EXPRESSION_WORDS
    return names


def check_parameters(suite: Mapping, parameters: Mapping[str, object]) -> None:
    """Refuse a suite that uses a parameter params.yaml does not give, naming the suite
    file, the expectation and the names it could use (GX would only say "No value found")."""
    for expectation in suite["expectations"]:
        for key, expression in _parameter_kwargs(expectation):
            missing = set(_IDENTIFIER.findall(expression)) - _EXPRESSION_WORDS - set(parameters)
            if missing:
                source = (suite.get("meta") or {}).get("source") or suite.get("name")
                raise ValueError(
                    f"{source}: {expectation_label(expectation)} {key} uses $PARAMETER "
                    f"{sorted(missing)}, which params.yaml does not give; known: "
                    f"{', '.join(sorted(parameters))}"
                )


class _Keep(dict):
    """A format mapping that leaves unknown placeholders as they are."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_fix(template: str | None, context: Mapping[str, object]) -> str | None:
    """``meta.fix`` with ``{curated}``, ``{scene}``, parameter names... filled in."""
    if not template:
        return None
    try:
        return string.Formatter().vformat(str(template), (), _Keep(context))
    except (ValueError, IndexError):  # a stray brace in the text: show it as written
        return str(template)
