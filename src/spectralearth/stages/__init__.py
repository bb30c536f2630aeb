"""The pipeline's stages, one module each: what the CLI, the Dagster assets and the DVC stages
(through the CLI) call, so each stage has exactly one implementation.

``ingest`` (synthetic archive, catalogue) -> ``curate`` (patches, index, training store,
summary) -> ``validate`` (GX gates) -> ``statistics`` (band statistics) -> ``pretrain``
-> ``downstream`` (datasets) -> ``evaluate`` (evaluations, results table) -> ``maps``.
Each stage is a function of typed settings and explicit paths that returns a frozen
dataclass (:class:`~spectralearth.stages.result.StageResult`) with ``.metadata()`` for the
Dagster UI and ``.summary()`` for the CLI.
"""
