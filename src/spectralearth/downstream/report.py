"""The benchmark results table: every finished evaluation, baselines side by side.

Input: evaluation rows (``run.EVALUATION_COLUMNS``), one CSV per (checkpoint, dataset,
protocol). :func:`summarize` keeps the ``test`` split and aggregates over seeds (mean, sample
std, number of seeds) per dataset, label fraction, model, protocol, head, recipe and metric,
with the size of the test split (patches, labelled pixels), the checkpoint's pretraining
profile, the wall time (mean) and peak memory (max; resident and GPU) of the runs (P6:
fine-tuning cost per protocol and dataset, and its ratio to the frozen protocol of the same
model on the same dataset with the same head and recipe).

Every table says how large its test split is and how many seeds each column averages, and
:func:`comparison_markdown` says, for each checkpoint against each baseline, whether the
difference is beyond noise (:data:`NOISE_RULE`). The numbers of a checkpoint pretrained
with a smoke-test profile (``names.SMOKE_TEST_PROFILES``: ``make run``'s ``cpu-tiny``) are
labelled so: they show the pipeline runs, not what pretraining learns.
"""

from __future__ import annotations

import math

import pandas as pd

from spectralearth.names import SMOKE_TEST_PROFILES

# A difference of means counts when it is at least NOISE_STDS x the larger std over seeds.
NOISE_STDS = 2.0
NOISE_RULE = (
    "a difference counts only when |mean_a - mean_b| >= 2 x the larger of the two sample "
    "standard deviations over seeds (with 3 seeds a side, about Welch's t = 2.4, two-sided "
    "p ~ 0.07); it is within noise otherwise, and unknown when neither side has 2 seeds. "
    "Seeds pair only the head's initialisation, not the encoders, so the rule is unpaired; "
    "a paired t-test on 3 seeds has 2 degrees of freedom (t > 4.3 for p < 0.05) and would "
    "call almost nothing."
)
WITHIN_NOISE, HIGHER, LOWER = "within noise", "higher, beyond noise", "lower, beyond noise"
NOISE_UNKNOWN = "noise unknown (one seed)"

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


def noise_verdict(
    mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int
) -> str:
    """Whether ``a`` differs from ``b`` beyond noise (:data:`NOISE_RULE`): one of
    :data:`HIGHER`, :data:`LOWER`, :data:`WITHIN_NOISE`, :data:`NOISE_UNKNOWN`. A side with
    one seed has no std; the other side's is used (the forest, deterministic given its
    seed, is often run once)."""
    stds = [float(s) for s, n in ((std_a, n_a), (std_b, n_b)) if n >= 2 and not pd.isna(s)]
    if not stds:
        return NOISE_UNKNOWN
    diff = float(mean_a) - float(mean_b)
    if abs(diff) < NOISE_STDS * max(stds) or diff == 0:
        return WITHIN_NOISE
    return HIGHER if diff > 0 else LOWER


def _profiles(values: pd.Series) -> str:
    found = sorted({str(v) for v in values.dropna()})
    return ",".join(found) if found else "unknown"


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Test-split rows -> one row per (dataset, fraction, model, protocol, metric) with
    ``mean``, ``std`` (NaN for one seed), ``n_seeds``, ``patches`` and ``pixels`` (the test
    split's size; NaN for rows written before they were recorded), ``profile`` (the
    checkpoint's pretraining profile), ``seconds`` (mean), ``seconds_std``, ``peak_mem_mb``
    and ``peak_gpu_mem_mb`` (max) and ``seconds_vs_frozen``."""
    test = rows[rows["split"] == "test"].copy()
    cols = [*KEYS, "mean", "std", "n_seeds", "patches", "pixels", "profile"]
    cols += ["seconds", "seconds_std", "peak_mem_mb", "peak_gpu_mem_mb"]
    if test.empty:
        return pd.DataFrame(columns=[*cols, "seconds_vs_frozen"])
    for k in ("method", "backbone"):
        test[k] = test[k].fillna("none")
    # rows written before dense heads existed had no head column: theirs was the linear one
    test["head"] = test["head"].fillna("linear") if "head" in test else "linear"
    test["recipe"] = test["recipe"].fillna(DEFAULT_RECIPE) if "recipe" in test else DEFAULT_RECIPE
    for k in ("peak_gpu_mem_mb", "patches", "pixels"):
        if k not in test:  # rows written before these were recorded
            test[k] = float("nan")
    if "profile" not in test:
        test["profile"] = float("nan")
    g = test.groupby(KEYS, dropna=False, sort=True)
    out = g.agg(
        mean=("value", "mean"),
        std=("value", "std"),
        n_seeds=("seed", "nunique"),
        patches=("patches", "max"),
        pixels=("pixels", "max"),
        profile=("profile", _profiles),
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


def _with_columns(summary: pd.DataFrame) -> pd.DataFrame:
    return summary.assign(
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


def _count(value: float) -> str:
    return "unknown" if pd.isna(value) else f"{int(value):,}"


def split_size_lines(summary: pd.DataFrame) -> list[str]:
    """One line per dataset: how many test patches (and labelled pixels) the numbers use."""
    lines = []
    for dataset, g in summary.groupby("dataset", sort=True):
        patches = g["patches"] if "patches" in g else pd.Series(dtype=float)
        pixels = g["pixels"] if "pixels" in g else pd.Series(dtype=float)
        if patches.isna().all():
            lines.append(f"{dataset}: size not recorded (rows written before it was)")
            continue
        text = f"{dataset}: {_count(patches.max())} patches"
        if pixels.notna().any():
            text += f", {_count(pixels.max())} labelled pixels"
        lines.append(text)
    return lines


def smoke_test_note(summary: pd.DataFrame) -> str | None:
    """The warning for checkpoints of a smoke-test profile, or None when there are none."""
    if "profile" not in summary:
        return None
    smoke = summary[summary["profile"].astype(str).isin(SMOKE_TEST_PROFILES)]
    if smoke.empty:
        return None
    which = ", ".join(
        f"{m} (profile {p})"
        for m, p in sorted(set(zip(smoke["model"], smoke["profile"], strict=True)))
    )
    return (
        f"**Smoke test, not a result.** {which}: pretrained with a profile that proves the "
        "pipeline runs (a few CPU steps on a few patches), not that pretraining learns. Its "
        "numbers say nothing about what the method reaches; see "
        "docs/what-pretraining-learns.md for the benchmark that does."
    )


def results_markdown(summary: pd.DataFrame) -> str:
    """Metrics table: one row per dataset, label fraction and metric; one column per model
    and protocol, baselines last; ``mean ± std`` over seeds where several ran. Below it the
    size of each test split, the seeds of each column, and the comparison with the
    baselines (:func:`comparison_markdown`); above it, the smoke-test warning if due."""
    if summary.empty:
        return "(no finished evaluation yet)"
    s = _with_columns(summary)
    s["cell"] = [_cell(m, d, n) for m, d, n in zip(s["mean"], s["std"], s["n_seeds"], strict=True)]
    wide = s.pivot_table(
        index=["dataset", "label_fraction", "metric"],
        columns="column",
        values="cell",
        aggfunc="first",
    )
    order = [c for c in _column_order(summary) if c in wide.columns]
    wide = wide[order].fillna("-")
    seeds = s.groupby("column")["n_seeds"].max()
    several = int(seeds.max()) > 1
    parts = [_markdown(wide.reset_index())]
    parts.append(
        "Test split"
        + ("; mean ± sample std over seeds where several ran." if several else ", one seed.")
        + " Test split size: "
        + "; ".join(split_size_lines(summary))
        + ". Seeds: "
        + ", ".join(f"{c} {int(seeds[c])}" for c in order)
        + "."
    )
    comparison = comparison_markdown(summary)
    if comparison:
        parts.append(comparison)
    note = smoke_test_note(summary)
    if note:
        parts.insert(0, note)
    return "\n\n".join(parts)


def comparisons(summary: pd.DataFrame) -> pd.DataFrame:
    """Each checkpoint against each baseline on the same dataset, label fraction and
    metric (random init under the same protocol, head and recipe; the forest as it is):
    the difference of means and its :func:`noise_verdict`. The reference code's duplicate
    metrics (``ref_*``) are left out."""
    cols = ["dataset", "label_fraction", "metric", "model", "baseline", "difference", "verdict"]
    s = _with_columns(summary)
    s = s[~s["metric"].astype(str).str.startswith("ref_")]
    models = s[~s["model"].isin(BASELINE_MODELS)]
    out = []
    for r in models.itertuples():
        same = s[
            (s["dataset"] == r.dataset)
            & (s["label_fraction"] == r.label_fraction)
            & (s["metric"] == r.metric)
        ]
        random = same[
            (same["model"] == BASELINE_MODELS[0])
            & (same["protocol"] == r.protocol)
            & (same["head"] == r.head)
            & (same["recipe"] == r.recipe)
        ]
        forest = same[same["model"] == BASELINE_MODELS[1]]
        for b in pd.concat([random, forest]).itertuples():
            out.append(
                {
                    "dataset": r.dataset,
                    "label_fraction": r.label_fraction,
                    "metric": r.metric,
                    "model": r.column,
                    "baseline": b.column,
                    "difference": float(r.mean - b.mean),
                    "verdict": noise_verdict(r.mean, r.std, r.n_seeds, b.mean, b.std, b.n_seeds),
                }
            )
    return pd.DataFrame(out, columns=cols)


def comparison_markdown(summary: pd.DataFrame) -> str:
    """The table of :func:`comparisons` and the rule it applies ("" when nothing to
    compare)."""
    table = comparisons(summary)
    if table.empty:
        return ""
    table = table.assign(difference=[f"{d:+.3f}" for d in table["difference"]])
    rule = NOISE_RULE[0].upper() + NOISE_RULE[1:]
    return f"**Against the baselines.** {rule}\n\n{_markdown(table)}"


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
