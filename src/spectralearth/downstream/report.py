"""The benchmark results table: every finished evaluation, baselines side by side.

Input: evaluation rows (``run.EVALUATION_COLUMNS``), one CSV per (checkpoint, dataset,
protocol). :func:`summarize` keeps the ``test`` split and aggregates over seeds (mean, sample
std, number of seeds) per dataset, label fraction, model, protocol and metric, with the wall
time (mean) and peak memory (max) of the runs (P6: fine-tuning cost per protocol and dataset,
and its ratio to the frozen protocol of the same model on the same dataset).
"""

from __future__ import annotations

import math

import pandas as pd

BASELINE_MODELS = ("random_init", "random_forest")
KEYS = ["dataset", "label_fraction", "model", "method", "backbone", "protocol", "head", "metric"]


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Test-split rows -> one row per (dataset, fraction, model, protocol, metric) with
    ``mean``, ``std`` (NaN for one seed), ``n_seeds``, ``seconds`` (mean),
    ``seconds_std``, ``peak_mem_mb`` (max) and ``seconds_vs_frozen``."""
    test = rows[rows["split"] == "test"].copy()
    cols = [*KEYS, "mean", "std", "n_seeds", "seconds", "seconds_std", "peak_mem_mb"]
    if test.empty:
        return pd.DataFrame(columns=[*cols, "seconds_vs_frozen"])
    for k in ("method", "backbone"):
        test[k] = test[k].fillna("none")
    # rows written before dense heads existed had no head column: theirs was the linear one
    test["head"] = test["head"].fillna("linear") if "head" in test else "linear"
    g = test.groupby(KEYS, dropna=False, sort=True)
    out = g.agg(
        mean=("value", "mean"),
        std=("value", "std"),
        n_seeds=("seed", "nunique"),
        seconds=("seconds", "mean"),
        seconds_std=("seconds", "std"),
        peak_mem_mb=("peak_mem_mb", "max"),
    ).reset_index()
    same = ["dataset", "label_fraction", "model", "head", "metric"]
    frozen = out[out["protocol"] == "frozen"].set_index(same)["seconds"]
    idx = pd.MultiIndex.from_frame(out[same])
    out["seconds_vs_frozen"] = out["seconds"].to_numpy() / frozen.reindex(idx).to_numpy()
    return out


def _cell(mean: float, std: float, n: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if n > 1 and not math.isnan(std):
        return f"{mean:.3f} ± {std:.3f}"
    return f"{mean:.3f}"


def _column(model: str, protocol: str, head: str = "linear") -> str:
    if protocol in ("rf", "none"):  # a baseline without an encoder (rows before "none": "rf")
        return model
    return f"{model} ({protocol})" if head == "linear" else f"{model} ({protocol}, {head} head)"


def _column_order(summary: pd.DataFrame) -> list[str]:
    """Checkpoints first, then the random-init baseline, then the random forest."""

    def rank(row) -> tuple:
        base = BASELINE_MODELS.index(row.model) + 1 if row.model in BASELINE_MODELS else 0
        return (base, row.model, row.protocol, row.head)

    pairs = summary[["model", "protocol", "head"]].drop_duplicates()
    return [_column(r.model, r.protocol, r.head) for r in sorted(pairs.itertuples(), key=rank)]


def _markdown(df: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def results_markdown(summary: pd.DataFrame) -> str:
    """Metrics table: one row per dataset, label fraction and metric; one column per model
    and protocol, baselines last; ``mean ± std`` over seeds where several ran."""
    if summary.empty:
        return "(no finished evaluation yet)"
    s = summary.assign(
        column=[
            _column(m, p, h)
            for m, p, h in zip(summary["model"], summary["protocol"], summary["head"], strict=True)
        ]
    )
    s["cell"] = [_cell(m, d, n) for m, d, n in zip(s["mean"], s["std"], s["n_seeds"], strict=True)]
    wide = s.pivot_table(
        index=["dataset", "label_fraction", "metric"],
        columns="column",
        values="cell",
        aggfunc="first",
    )
    wide = wide[[c for c in _column_order(summary) if c in wide.columns]].fillna("-")
    seeds = int(summary["n_seeds"].max())
    note = (
        f"\n\nTest split; mean ± std over {seeds} seeds where several ran."
        if seeds > 1
        else "\n\nTest split, one seed."
    )
    return _markdown(wide.reset_index()) + note


def cost_markdown(summary: pd.DataFrame) -> str:
    """P6: wall time (mean ± std over seeds) and peak memory per dataset, model and protocol,
    and the time as a multiple of the frozen protocol's."""
    if summary.empty:
        return "(no finished evaluation yet)"
    one = summary.drop_duplicates(["dataset", "label_fraction", "model", "protocol", "head"])
    rows = []
    for r in one.itertuples():
        ratio = r.seconds_vs_frozen
        rows.append(
            {
                "dataset": r.dataset,
                "label_fraction": r.label_fraction,
                "model": r.model,
                "protocol": r.protocol,
                "head": r.head,
                "seconds": _cell(r.seconds, r.seconds_std, r.n_seeds),
                "peak_mem_mb": f"{r.peak_mem_mb:.0f}",
                "x frozen": "-" if pd.isna(ratio) else f"{ratio:.2f}",
            }
        )
    return _markdown(pd.DataFrame(rows))


def report_markdown(summary: pd.DataFrame) -> str:
    return (
        "# Downstream benchmark\n\n## Metrics\n\n"
        + results_markdown(summary)
        + "\n\n## Cost per protocol (P6)\n\n"
        + cost_markdown(summary)
        + "\n\nPeak memory is the evaluating process's peak resident set (getrusage), "
        "which includes everything that process ran before.\n"
    )
