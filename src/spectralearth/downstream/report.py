"""The benchmark results table: every finished evaluation, baselines side by side.

Input: evaluation rows (``run.EVALUATION_COLUMNS``), one CSV per (checkpoint, dataset,
protocol). :func:`summarize` keeps the ``test`` split and aggregates over seeds (mean, sample
std, number of seeds) per dataset, label fraction, model, protocol, head, recipe and metric,
with the wall time (mean) and peak memory (max; resident and GPU) of the runs (P6:
fine-tuning cost per protocol and dataset, and its ratio to the frozen protocol of the same
model on the same dataset with the same head and recipe).
"""

from __future__ import annotations

import math

import pandas as pd

BASELINE_MODELS = ("random_init", "random_forest")
KEYS = [
    "dataset",
    "label_fraction",
    "model",
    "method",
    "backbone",
    "protocol",
    "head",
    "recipe",
    "metric",
]
DEFAULT_RECIPE = "cpu"  # rows written before recipes existed were the cpu recipe's


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Test-split rows -> one row per (dataset, fraction, model, protocol, metric) with
    ``mean``, ``std`` (NaN for one seed), ``n_seeds``, ``seconds`` (mean),
    ``seconds_std``, ``peak_mem_mb`` and ``peak_gpu_mem_mb`` (max) and ``seconds_vs_frozen``."""
    test = rows[rows["split"] == "test"].copy()
    cols = [*KEYS, "mean", "std", "n_seeds", "seconds", "seconds_std", "peak_mem_mb"]
    cols.append("peak_gpu_mem_mb")
    if test.empty:
        return pd.DataFrame(columns=[*cols, "seconds_vs_frozen"])
    for k in ("method", "backbone"):
        test[k] = test[k].fillna("none")
    # rows written before dense heads existed had no head column: theirs was the linear one
    test["head"] = test["head"].fillna("linear") if "head" in test else "linear"
    test["recipe"] = test["recipe"].fillna(DEFAULT_RECIPE) if "recipe" in test else DEFAULT_RECIPE
    if "peak_gpu_mem_mb" not in test:
        test["peak_gpu_mem_mb"] = float("nan")
    g = test.groupby(KEYS, dropna=False, sort=True)
    out = g.agg(
        mean=("value", "mean"),
        std=("value", "std"),
        n_seeds=("seed", "nunique"),
        seconds=("seconds", "mean"),
        seconds_std=("seconds", "std"),
        peak_mem_mb=("peak_mem_mb", "max"),
        peak_gpu_mem_mb=("peak_gpu_mem_mb", "max"),
    ).reset_index()
    same = ["dataset", "label_fraction", "model", "head", "recipe", "metric"]
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


def _column(model: str, protocol: str, head: str = "linear", recipe: str = DEFAULT_RECIPE) -> str:
    if protocol in ("rf", "none"):  # a baseline without an encoder (older rows: "rf")
        return model
    parts = [protocol]
    if head != "linear":
        parts.append(f"{head} head")
    if recipe != DEFAULT_RECIPE:
        parts.append(f"{recipe} recipe")
    return f"{model} ({', '.join(parts)})"


def _column_order(summary: pd.DataFrame) -> list[str]:
    """Checkpoints first, then the random-init baseline, then the random forest."""

    def rank(row) -> tuple:
        base = BASELINE_MODELS.index(row.model) + 1 if row.model in BASELINE_MODELS else 0
        return (base, row.model, row.protocol, row.head, row.recipe)

    pairs = summary[["model", "protocol", "head", "recipe"]].drop_duplicates()
    ordered = sorted(pairs.itertuples(), key=rank)
    return [_column(r.model, r.protocol, r.head, r.recipe) for r in ordered]


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
            _column(m, p, h, r)
            for m, p, h, r in zip(
                summary["model"],
                summary["protocol"],
                summary["head"],
                summary["recipe"],
                strict=True,
            )
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
    one = summary.drop_duplicates(
        ["dataset", "label_fraction", "model", "protocol", "head", "recipe"]
    )
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
                "recipe": r.recipe,
                "seconds": _cell(r.seconds, r.seconds_std, r.n_seeds),
                "peak_mem_mb": f"{r.peak_mem_mb:.0f}",
                "peak_gpu_mem_mb": "-"
                if pd.isna(r.peak_gpu_mem_mb)
                else f"{r.peak_gpu_mem_mb:.0f}",
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
        + "\n\nPeak memory is each evaluation's own peak resident set (sampled while it ran) "
        "and, on a GPU, its peak of torch.cuda.max_memory_allocated.\n"
    )
